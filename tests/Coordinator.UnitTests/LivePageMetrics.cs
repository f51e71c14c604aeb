// The step metrics the live page's tests report: curves that move, a NaN loss and an infinite max |logit| at step 30.
using Coordinator.Protocol;

namespace Coordinator.UnitTests;

internal static class LivePageMetrics
{
    public const int Steps = 60;

    /// <summary>Curves that move: a falling loss, a warm-up and decay of the learning rate, ranks at different speeds.
    /// Step 30 of rank 0 has a NaN loss and an infinite max |logit|, which the JSON and the charts must survive.</summary>
    public static StepMetrics Metrics(int rank, long step)
    {
        double s = step;
        var m = new StepMetrics
        {
            Step = step, TrainLoss = 1 + 4 * Math.Exp(-s / 20) + 0.1 * Math.Sin(s), LearningRate = 1e-3 * Math.Min(1, s / 10) * (1 - s / 80),
            GradNorm = 1 + 0.5 * Math.Sin(s / 5), TokensPerSecond = 1000 + 300 * rank + 100 * Math.Sin(s / 3), StepSeconds = 0.1 + 0.03 * rank + 0.02 * Math.Cos(s / 4),
            MuNorm = 0.5 * Math.Exp(-s / 15), MeanLogit = -0.2 - 0.01 * s, LogitStd = 1 + 0.01 * s, MaxAbsLogit = 5 + 0.1 * s, MeanLogZ = 6 - 0.02 * s, RLog = 0.7,
        };
        if (step % 20 == 0) m.ValLoss = m.TrainLoss + 0.2;
        if (rank == 0 && step == 30) (m.TrainLoss, m.MaxAbsLogit) = (double.NaN, double.PositiveInfinity);
        return m;
    }

    public static HeartbeatRequest Beat(int rank, long step, params StepMetrics[] metrics) =>
        new() { JobId = TestJob.JobId, Generation = 1, Rank = rank, Step = step, Metrics = { metrics } };

}
