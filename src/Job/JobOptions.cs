// The `job` section of the run configuration: world size, failure handling and checkpoints.
namespace Job;

public sealed record JobOptions
{
    /// <summary>Job name; ranks must name it when they register. Empty: the launcher makes one up.</summary>
    public string Id { get; init; } = "";
    /// <summary>Ranks, each a process training on its share of every global batch; at most <see cref="MaxWorldSize"/>.</summary>
    public int WorldSize { get; init; } = 2;

    /// <summary>The largest job.world_size: 8192 GPUs (1024 nodes of 8) and beyond, up to what one coordinator serves
    /// (docs/benchmarks.md: 16384 simulated ranks' heartbeats). Rank pods' host names carry up to 5 digits of index.</summary>
    public const int MaxWorldSize = 65536;
    /// <summary>Vocabulary-parallel size tp: world_size = data-parallel size x tp. Each group of tp consecutive ranks
    /// sees the same batch and holds the embeddings split by rows; 1 = unsharded.</summary>
    public int VocabParallel { get; init; } = 1;
    /// <summary>Collectives backend: tcp (ring over TCP; CPU tensors, CUDA ones through host memory) or nccl (GPUs).</summary>
    public Backend Backend { get; init; } = Backend.Tcp;
    /// <summary>Generations started after a failure before the job is given up.</summary>
    public int MaxRestarts { get; init; } = 3;
    public double HeartbeatIntervalS { get; init; } = 1;
    /// <summary>A rank silent for this long has failed; a rank that cannot reach the coordinator this long aborts.</summary>
    public double HeartbeatTimeoutS { get; init; } = 15;
    /// <summary>How long a generation waits for all its ranks to register (counted from the first rank's arrival), and
    /// ranks for each other in an exchange.</summary>
    public double RendezvousTimeoutS { get; init; } = 120;
    /// <summary>How long a generation waits for its first rank (pods being scheduled, images pulled, a queue admitting
    /// the rank Job); 0 = job.rendezvous_timeout_s. Once a rank is in, the rest have job.rendezvous_timeout_s.</summary>
    public double StartupTimeoutS { get; init; }

    /// <summary>The first rank's wait: job.startup_timeout_s, or job.rendezvous_timeout_s where that is 0.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public double FirstRankTimeoutS => StartupTimeoutS > 0 ? StartupTimeoutS : RendezvousTimeoutS;
    /// <summary>A generation whose ranks all beat but none finishes a step for this long has hung (a collective waiting
    /// on a peer that never joins it: NCCL's waits have no timeout of their own) and fails; 0 = never. Counts from
    /// the end of registration, so it must cover the first step, an evaluation and a checkpoint.</summary>
    public double StepTimeoutS { get; init; } = 600;
    /// <summary>Steps between checkpoints; 0 = none but the one a stop command asks for.</summary>
    public int CheckpointEvery { get; init; } = 100;
    /// <summary>Committed checkpoints kept (the newest).</summary>
    public int KeepCheckpoints { get; init; } = 3;
    /// <summary>Whether to continue from the newest valid checkpoint in run.out_dir (<see cref="ResumeMode"/>).</summary>
    [System.Text.Json.Serialization.JsonConverter(typeof(ResumeModeConverter))] // over the options' enum converter
    public ResumeMode Resume { get; init; }

    public void Validate()
    {
        if (Id.Length > 128 || Id.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
            throw new ArgumentException($"job.id = '{Id}': at most 128 of the characters A-Z a-z 0-9 - _ .");
        if (WorldSize < 1 || WorldSize > MaxWorldSize) throw new ArgumentException($"job.world_size = {WorldSize}: must be in [1, {MaxWorldSize}]");
        _ = ParallelLayout.Of(this); // world size and vocab_parallel fit together
        if (MaxRestarts < 0) throw new ArgumentException($"job.max_restarts = {MaxRestarts}: must be >= 0");
        if (!(HeartbeatIntervalS > 0)) throw new ArgumentException($"job.heartbeat_interval_s = {HeartbeatIntervalS}: must be > 0");
        if (!(HeartbeatTimeoutS >= 2 * HeartbeatIntervalS))
            throw new ArgumentException($"job.heartbeat_timeout_s = {HeartbeatTimeoutS}: must be at least twice job.heartbeat_interval_s = {HeartbeatIntervalS}");
        if (!(RendezvousTimeoutS > 0)) throw new ArgumentException($"job.rendezvous_timeout_s = {RendezvousTimeoutS}: must be > 0");
        if (!(StartupTimeoutS >= 0)) throw new ArgumentException($"job.startup_timeout_s = {StartupTimeoutS}: must be >= 0 (0: job.rendezvous_timeout_s)");
        if (!(StepTimeoutS == 0 || StepTimeoutS >= 2 * HeartbeatIntervalS)) // progress arrives with the heartbeats
            throw new ArgumentException($"job.step_timeout_s = {StepTimeoutS}: must be 0 (never) or at least twice job.heartbeat_interval_s = {HeartbeatIntervalS}");
        if (CheckpointEvery < 0) throw new ArgumentException($"job.checkpoint_every = {CheckpointEvery}: must be >= 0");
        if (KeepCheckpoints < 1) throw new ArgumentException($"job.keep_checkpoints = {KeepCheckpoints}: must be >= 1");
    }
}
