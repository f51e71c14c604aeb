// Which data each training step reads: the identity, until a divergence rollback skips what the rolled-back steps read.
using Job;

namespace Coordinator;

/// <summary>
/// Maps training steps to data steps (global batch numbers of the BatchPlan). A rollback from trouble seen at step
/// `at` (steps done) to the checkpoint at step `to` makes step `to` read the batch after the one step `at` read, so the
/// batches of steps to..at-1 are never read again. Earlier steps keep their data, so a restart from any older
/// checkpoint replays exactly what the job read. Not thread-safe: JobState calls it under its lock.
/// </summary>
public sealed class DataSchedule(IEnumerable<DataSkip>? skips = null)
{
    readonly List<DataSkip> skips = [.. (skips ?? []).OrderBy(s => s.FromStep)];

    public IReadOnlyList<DataSkip> Skips => skips;

    public long DataStep(long step) => step + (skips.LastOrDefault(s => s.FromStep <= step)?.Offset ?? 0);

    /// <summary>Skips the data of steps [to, at); returns the data steps [first, next) no longer read from step `to` on.</summary>
    public (long First, long Next) Skip(long to, long at)
    {
        if (to < 0 || at <= to) throw new ArgumentOutOfRangeException(nameof(at), $"rollback to step {to} from step {at}: need 0 <= to < at");
        long first = DataStep(to), next = DataStep(at - 1) + 1;
        skips.RemoveAll(s => s.FromStep >= to);
        skips.Add(new DataSkip(to, next - to));
        return (first, next);
    }
}
