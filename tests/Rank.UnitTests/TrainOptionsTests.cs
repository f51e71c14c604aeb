using Rank.Training;

namespace Rank.UnitTests;

public class TrainOptionsTests
{
    static readonly TrainOptions Schedule = new() { Steps = 100, WarmupSteps = 10, LearningRate = 1e-2, MinLearningRate = 1e-4 };

    static void Close(double expected, double actual) =>
        Assert.True(Math.Abs(expected - actual) <= 1e-12 + 1e-9 * Math.Abs(expected), $"expected {expected:R}, got {actual:R}");

    [Fact]
    public void Warmup_rises_linearly_from_lr_over_warmup_to_the_peak()
    {
        Close(1e-2 / 10, Schedule.LearningRateAt(0));
        Close(1e-2 * 5 / 10, Schedule.LearningRateAt(4));
        Close(1e-2, Schedule.LearningRateAt(9));
        for (int step = 1; step < 10; step++)
            Close(Schedule.LearningRateAt(step) - Schedule.LearningRateAt(step - 1), 1e-2 / 10);
    }

    [Fact]
    public void The_first_step_after_warmup_is_at_the_peak()
    {
        Close(1e-2, Schedule.LearningRateAt(10));
    }

    [Fact]
    public void The_cosine_reaches_the_minimum_at_the_last_step()
    {
        Close(1e-4, Schedule.LearningRateAt(99));
    }

    [Fact]
    public void The_cosine_is_halfway_between_peak_and_minimum_in_the_middle_of_the_decay()
    {
        // 91 steps, warmup 10: the decay runs over steps 10..90, 80 intervals; a quarter at step 30, the middle at 50.
        var schedule = Schedule with { Steps = 91 };
        Close(1e-4 + 0.5 * (1e-2 - 1e-4), schedule.LearningRateAt(50));
        Close(1e-4 + 0.5 * (1e-2 - 1e-4) * (1 + Math.Cos(Math.PI / 4)), schedule.LearningRateAt(30));
    }

    [Fact]
    public void The_learning_rate_never_increases_after_warmup()
    {
        for (int step = 11; step < Schedule.Steps; step++)
            Assert.True(Schedule.LearningRateAt(step) <= Schedule.LearningRateAt(step - 1),
                $"lr({step}) = {Schedule.LearningRateAt(step)} > lr({step - 1}) = {Schedule.LearningRateAt(step - 1)}");
    }

    [Fact]
    public void Every_learning_rate_lies_between_zero_and_the_peak()
    {
        for (int step = 0; step < Schedule.Steps; step++)
        {
            double lr = Schedule.LearningRateAt(step);
            Assert.InRange(lr, 1e-4 / 10, 1e-2 * (1 + 1e-12));
        }
    }

    [Fact]
    public void Without_warmup_the_first_step_is_at_the_peak()
    {
        var schedule = Schedule with { WarmupSteps = 0 };

        Close(1e-2, schedule.LearningRateAt(0));
        Close(1e-4, schedule.LearningRateAt(99));
    }

    [Fact]
    public void Warmup_over_all_steps_ends_at_the_peak()
    {
        var schedule = Schedule with { Steps = 10, WarmupSteps = 10 };

        Close(1e-3, schedule.LearningRateAt(0));
        Close(1e-2, schedule.LearningRateAt(9));
    }
}
