// What the coordinator runs: the job's identity and options, the configuration it hands out, and its data order.
using Job;
using Data;

namespace Coordinator;

/// <param name="ConfigJson">The resolved run configuration, handed to every rank as it is.</param>
/// <param name="Train">The global batch order: Train.BatchSize = micro-batch size x micro-batches sequences per step.</param>
/// <param name="MicroBatches">Gradient-accumulation steps per optimizer step (train.grad_accum).</param>
/// <param name="Steps">Optimizer steps of the whole job (train.steps).</param>
/// <param name="OutDir">run.out_dir: checkpoints go to OutDir/checkpoints, the log to OutDir/coordinator.log.</param>
public sealed record JobSpec(string JobId, string Token, JobOptions Options, string ConfigJson, BatchPlan Train,
    int MicroBatches, long Steps, string OutDir)
{
    /// <summary>The divergence rules and what happens when one fires (the run's `divergence` section).</summary>
    public DivergenceOptions Divergence { get; init; } = new();

    /// <summary>ln V of the padded vocabulary: the loss of an untrained model, which divergence.loss_above_untrained
    /// measures from. Null (the coordinator was not told): that rule is off.</summary>
    public double? UntrainedLoss { get; init; }

    /// <summary>The resume check: the configuration JSON of the checkpoint a resumed job starts from -> a message naming
    /// the section and values that differ from this run's, or null when the run may continue it. The configuration's
    /// owner supplies it (RunConfig.ResumeConflict); the coordinator does not read the configuration.</summary>
    public required Func<string, string?> ResumeConflict { get; init; }

    /// <summary>The ranks' layout: world size = data-parallel size x job.vocab_parallel.</summary>
    public ParallelLayout Layout => ParallelLayout.Of(Options);

    /// <summary>Model replicas, each a group of job.vocab_parallel ranks that see the same rows.</summary>
    public int DataParallel => Layout.DataParallel;

    public void Validate()
    {
        Options.Validate();
        Divergence.Validate();
        if (string.IsNullOrEmpty(JobId)) throw new ArgumentException("job id is empty");
        if (Token.Length < 16) throw new ArgumentException($"job token has {Token.Length} characters: at least 16 are needed");
        if (MicroBatches < 1 || Train.BatchSize % MicroBatches != 0)
            throw new ArgumentException($"train.grad_accum = {MicroBatches}: must divide the global batch of {Train.BatchSize} sequences");
        Layout.ReplicaBatch(Train.BatchSize / MicroBatches);
        if (Steps < 1) throw new ArgumentException($"train.steps = {Steps}: must be >= 1");
    }
}
