// The job's data assignment: which sequences each rank reads at each step, after the divergence rollbacks' skips.
namespace Coordinator;

public sealed partial class JobState
{
    /// <summary>The caller's rows (sequence numbers of the plan) for `count` steps from `firstStep` (0-based), cut at train.steps.</summary>
    public IReadOnlyList<(long Step, long[] Sequences)> Batches(Caller c, long firstStep, int count)
    {
        if (count < 1 || count > MaxBatchSteps) throw Refuse(RefusalKind.InvalidArgument, $"batches: count {count} outside [1, {MaxBatchSteps}]");
        if (firstStep < 0 || firstStep >= spec.Steps) throw Refuse(RefusalKind.InvalidArgument, $"batches: first_step {firstStep} outside [0, {spec.Steps})");
        long[] dataSteps;
        lock (gate)
        {
            Member(c);
            dataSteps = [.. Enumerable.Range(0, (int)(Math.Min(spec.Steps, firstStep + count) - firstStep)).Select(i => schedule.DataStep(firstStep + i))];
        }
        int replica = spec.Layout.DataRank(c.Rank);
        return [.. dataSteps.Select((d, i) => (firstStep + i, spec.Train.RankRows(d, replica, spec.DataParallel, spec.MicroBatches)))];
    }
}
