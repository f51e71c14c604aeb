// What a training run reports to, and learns from, whoever runs it: the coordinator, or nobody (one process).
using Job;

namespace Rank.Training;

public interface ITrainingSession
{
    /// <summary>Steps already done: 0, or the step of the checkpoint in ResumeFrom.</summary>
    long StartStep { get; }

    /// <summary>Checkpoint directory to load before the first step, or null.</summary>
    string? ResumeFrom { get; }

    /// <summary>Where the checkpoint taken after `step` steps goes.</summary>
    string CheckpointDirectory(long step);

    /// <summary>After every step: steps done, and the step's metrics when it was logged.</summary>
    void Progress(long stepsDone, StepMetrics? metrics);

    /// <summary>True once this rank was asked to stop; the ranks agree on the step in the step's reduction.</summary>
    bool StopRequested { get; }

    /// <summary>This rank's part of the checkpoint after `step` steps is on disk. Whoever commits it computes the data
    /// cursor for its manifest: the coordinator (through the rollbacks' data skips), or LocalSession.</summary>
    void CheckpointWritten(long step, IReadOnlyList<CheckpointFile> files);
}

/// <summary>One process without a coordinator (tests, benchmarks): it commits its own checkpoints, with the data cursor
/// after each step from <paramref name="cursorAt"/> (the run's BatchPlan.CursorAt: no rollbacks, no skips).</summary>
public sealed class LocalSession(string outDir, int keepCheckpoints, string configJson, Func<long, (long Epoch, long Position)> cursorAt,
                                 long startStep = 0, string? resumeFrom = null) : ITrainingSession
{
    readonly CheckpointCatalog catalog = new(Path.Combine(outDir, "checkpoints"), _ => { });

    public long StartStep => startStep;
    public string? ResumeFrom => resumeFrom;
    public bool StopRequested { get; set; }
    public string CheckpointDirectory(long step) => catalog.DirectoryFor(step);
    public void Progress(long stepsDone, StepMetrics? metrics) { }

    public void CheckpointWritten(long step, IReadOnlyList<CheckpointFile> files)
    {
        var (epoch, position) = cursorAt(step);
        catalog.Commit(new CheckpointManifest(step, "local", 1, 1, epoch, position, files, configJson), keepCheckpoints);
    }
}
