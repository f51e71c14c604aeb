namespace Oec.UnitTests;

public class LearningRateSensitivityTests
{
    [Fact]
    public void The_published_formula_caps_diverged_and_bad_runs_at_L0_on_a_hand_computed_example()
    {
        // capped: [3.0, 2.5, 10.83, 10.83]; best 2.5; LRS = (0.5 + 0 + 8.33 + 8.33) / 3 = 17.16 / 3 = 5.72
        double lrs = LearningRateSensitivity.Compute([3.0, 2.5, double.NaN, 12.0], 10.83);

        TensorAssert.Close(5.72, lrs, rtol: 1e-12);
    }

    [Fact]
    public void An_infinite_loss_counts_as_a_diverged_run()
    {
        double withInfinity = LearningRateSensitivity.Compute([3.0, 2.5, double.PositiveInfinity, 12.0], 10.83);

        TensorAssert.Close(5.72, withInfinity, rtol: 1e-12);
    }

    [Fact]
    public void The_order_of_the_runs_does_not_matter()
    {
        double a = LearningRateSensitivity.Compute([3.0, 2.5, double.NaN, 12.0], 10.83);
        double b = LearningRateSensitivity.Compute([12.0, double.NaN, 2.5, 3.0], 10.83);

        Assert.Equal(a, b);
    }

    [Fact]
    public void Equal_losses_at_every_learning_rate_give_zero()
    {
        Assert.Equal(0.0, LearningRateSensitivity.Compute([3.25, 3.25, 3.25, 3.25, 3.25, 3.25, 3.25], 10.83));
    }

    [Fact]
    public void Two_runs_divide_by_one()
    {
        Assert.Equal(1.5, LearningRateSensitivity.Compute([4.0, 2.5], 10.0), 12);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public void Fewer_than_two_runs_throw_naming_the_count(int runs)
    {
        var losses = Enumerable.Repeat(3.0, runs).ToArray();

        var e = Assert.Throws<ArgumentException>(() => LearningRateSensitivity.Compute(losses, 10.83));
        Assert.Contains($"got {runs}", e.Message);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-10.83)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void A_non_positive_or_non_finite_L0_throws_naming_the_value(double initialLoss)
    {
        var e = Assert.Throws<ArgumentException>(() => LearningRateSensitivity.Compute([3.0, 2.5], initialLoss));
        Assert.Contains($"L0 = {initialLoss}", e.Message);
    }
}
