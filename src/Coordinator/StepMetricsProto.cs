// The step metrics on the wire: the one mapping between the StepMetrics record and its proto message, both ways.
using Proto = Coordinator.Protocol;

namespace Coordinator;

/// <summary>Record to message on the rank's side (heartbeats), message to record on the coordinator's. val_loss is
/// optional on the wire: absent when the step did not validate, as ValLoss is null.</summary>
public static class StepMetricsProto
{
    public static Proto.StepMetrics ToProto(this Job.StepMetrics m)
    {
        var p = new Proto.StepMetrics
        {
            Step = m.Step, TrainLoss = m.TrainLoss, LearningRate = m.LearningRate, GradNorm = m.GradNorm, TokensPerSecond = m.TokensPerSecond,
            StepSeconds = m.StepSeconds, MuNorm = m.MuNorm, MeanLogit = m.MeanLogit, LogitStd = m.LogitStd, MaxAbsLogit = m.MaxAbsLogit,
            MeanLogZ = m.MeanLogZ, RLog = m.RLog,
        };
        if (m.ValLoss is double v) p.ValLoss = v;
        return p;
    }

    /// <summary>Throws OverflowException for a step beyond int.MaxValue, which no run reaches.</summary>
    public static Job.StepMetrics ToRecord(this Proto.StepMetrics p) =>
        new(checked((int)p.Step), p.TrainLoss, p.HasValLoss ? p.ValLoss : null, p.LearningRate, p.GradNorm, p.TokensPerSecond, p.StepSeconds,
            p.MuNorm, p.MeanLogit, p.LogitStd, p.MaxAbsLogit, p.MeanLogZ, p.RLog);
}
