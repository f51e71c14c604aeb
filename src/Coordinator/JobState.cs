// The job as the coordinator sees it: generations of ranks, their rendezvous, data, heartbeats, checkpoints and end.
using Job;
using System.Diagnostics;

namespace Coordinator;

/// <summary>
/// Every decision of the coordinator, behind one lock; the gRPC service only maps calls here and answers back. A
/// generation is one attempt with a full world: it opens for registration, runs once all ranks are in, and ends when
/// every rank finished, or fails (a rank reported an error, stopped heartbeating, exited, or the rendezvous timed out).
/// A failed generation is followed by the next, resumed from the newest valid checkpoint, until job.max_restarts are
/// used up. Requests are validated here: the job id, the generation, rank numbers, sizes, steps. Violations become
/// JobRefusals whose message names the value. One partial file per concern, all under the one lock: membership and
/// rendezvous (JobState.Membership.cs), data assignment (JobState.Data.cs), checkpoint commits
/// (JobState.Checkpoints.cs), generations, rollbacks and the watchdog (JobState.Generations.cs).
/// </summary>
public sealed partial class JobState : IDisposable
{
    const int MaxText = 4096, MaxKey = 256, MaxFiles = 64, MaxBatchSteps = 1024;

    readonly JobSpec spec;
    readonly JobLog log;
    readonly CheckpointCatalog catalog;
    readonly Lock gate = new();
    readonly Timer watchdog;
    readonly TaskCompletionSource<JobOutcome> outcome = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly Stopwatch clock = Stopwatch.StartNew();
    Attempt current;
    JobPhase phase = JobPhase.Registering;
    int restarts;
    string? stopReason;
    int divergenceEvents, rollbacks;
    long skippedSequences;
    long stepsTrained;
    readonly DivergenceMonitor monitor;
    // The step the job last started from healthy: the checkpoint it resumed from, or a rollback's target. The monitor
    // has judged no step of a resumed job yet, and forgets those after a rollback's target.
    long healthyFloor;
    readonly Lock rotationGate = new();
    Task rotation = Task.CompletedTask;
    readonly DataSchedule schedule;
    double learningRateScale = 1;

    public JobState(JobSpec spec, JobLog log)
    {
        spec.Validate();
        (this.spec, this.log) = (spec, log);
        catalog = new CheckpointCatalog(Path.Combine(spec.OutDir, "checkpoints"), log.Info);
        monitor = new DivergenceMonitor(spec.Divergence, spec.UntrainedLoss);
        var (step, from, manifest) = InitialCheckpoint();
        healthyFloor = step;
        schedule = new DataSchedule(manifest?.DataSkips);
        learningRateScale = manifest?.LearningRateScale ?? 1;
        rollbacks = manifest?.Rollbacks ?? 0;
        current = new Attempt(1, spec.Options.WorldSize, step, from, clock.Elapsed);
        log.Info($"job {spec.JobId}: world size {World}, {spec.Steps} steps, {spec.Train.Plan.Count:N0} training sequences " +
                 $"(data {spec.Train.Plan.Fingerprint()}); generation 1 waits for its ranks" + (from is null ? "" : $"; resuming from {from} (step {step})"));
        watchdog = new Timer(_ => Watch(), null, TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(250));
        // A coordinator restarted after its job finished (a Deployment's pod moved) has nothing left to run; without the
        // model file (the job ended between its last checkpoint and the model's write) a generation at the last step
        // trains nothing and writes it.
        if (step >= spec.Steps && File.Exists(Path.Combine(spec.OutDir, "model.safetensors")))
            lock (gate) End(new JobOutcome(JobPhase.Succeeded, $"already finished: the checkpoint {from} is at step {step}, train.steps = {spec.Steps}", step, double.NaN, null));
    }

    public JobSpec Spec => spec;
    public CheckpointCatalog Catalog => catalog;
    int World => spec.Options.WorldSize;

    /// <summary>Completes when the job has ended, however.</summary>
    public Task<JobOutcome> Outcome => outcome.Task;

    /// <summary>Raised (outside the lock) with the number of a generation opened after a failure.</summary>
    public event Action<int>? GenerationOpened;

    /// <summary>Raised (outside the lock) with the step the job goes back to when a generation opens after a failure or
    /// a divergence rollback, before GenerationOpened: what was reported after that step is void.</summary>
    public event Action<long>? Rewound;

    /// <summary>Raised (outside the lock), oldest first, for each logged step a heartbeat brings that its rank had not reported before.</summary>
    public event Action<int, StepMetrics>? StepReported;

    public int Generation { get { lock (gate) return current.Number; } }
    public JobPhase Phase { get { lock (gate) return phase; } }
    public int Restarts { get { lock (gate) return restarts; } }
    /// <summary>Multiplies the learning-rate schedule: 1, times divergence.learning_rate_factor per rollback.</summary>
    public double LearningRateScale { get { lock (gate) return learningRateScale; } }
    /// <summary>Times a divergence rule fired (whatever the action).</summary>
    public int DivergenceEvents { get { lock (gate) return divergenceEvents; } }
    /// <summary>Rollbacks done after divergence (not counted in Restarts).</summary>
    public int Rollbacks { get { lock (gate) return rollbacks; } }
    /// <summary>Training sequences skipped by rollbacks: the data of the steps rolled back.</summary>
    public long SkippedSequences { get { lock (gate) return skippedSequences; } }
    /// <summary>Optimizer steps rank 0 has trained, over all generations: a step trained again after a rollback or a
    /// restart counts again (the work done, not the progress made).</summary>
    public long StepsTrained { get { lock (gate) return stepsTrained; } }

    /// <summary>Seconds since the job last moved: since a rank of the running generation reported a step it had not
    /// reported before (or the generation started), or, while a generation registers, since it opened; null once the
    /// job is over.</summary>
    public double? SecondsSinceProgress
    {
        get
        {
            lock (gate)
                return IsOver ? null : (clock.Elapsed - (phase == JobPhase.Registering ? current.Opened : current.LastProgress)).TotalSeconds;
        }
    }

    /// <summary>Caller holds the lock. The newest step known healthy: the last that passed every divergence rule, or the
    /// step the job started from healthy (a resumed checkpoint, a rollback's target) when later. A rollback goes to the
    /// newest checkpoint at or before it, which rotation keeps until a later one is known healthy.</summary>
    long HealthyStep => Math.Max(monitor.LastHealthyStep, healthyFloor);

    public IReadOnlyList<RankStatus> Ranks()
    {
        lock (gate)
        {
            var now = clock.Elapsed;
            return current.Slots.Select((s, r) => s is null ? null
                : new RankStatus(r, s.Host, s.Pid, s.Step, (now - s.LastBeat).TotalSeconds, s.Finish is not null, s.Metrics))
                .OfType<RankStatus>().ToList();
        }
    }

    public void Dispose()
    {
        watchdog.Dispose();
        Rotation.Wait(); // a checkpoint half deleted by a process on its way out would be left for the next run to skip
    }

    bool IsOver => phase is JobPhase.Succeeded or JobPhase.Stopped or JobPhase.Diverged or JobPhase.Failed;

    // Caller holds the lock.
    void End(JobOutcome o)
    {
        phase = o.Phase;
        current.Abort($"job {spec.JobId} ended: {o.Reason}");
        current.NextAfterOwnStop?.TrySetResult(); // registrations waiting for a next generation hear that the job is over
        log.Info($"job {spec.JobId} {o.Phase.ToString().ToLowerInvariant()}: {o.Reason}");
        outcome.TrySetResult(o);
    }

    // Caller holds the lock.
    void CheckJob(string jobId, string peer)
    {
        if (jobId != spec.JobId)
            throw Refuse(RefusalKind.PermissionDenied, $"a call from {peer} names job '{Clip(jobId)}'; this coordinator runs job '{spec.JobId}'");
    }

    // Caller holds the lock. The current generation, after checking the job, the generation and the rank.
    Attempt Member(Caller c)
    {
        CheckJob(c.JobId, c.Peer);
        if (c.Generation != current.Number)
            throw Refuse(RefusalKind.Aborted, $"rank {c.Rank} at {c.Peer} speaks for generation {c.Generation}; the current one is {current.Number}");
        if (phase != JobPhase.Running && !IsOver)
            throw Refuse(RefusalKind.FailedPrecondition, $"generation {c.Generation} is not running yet ({phase})");
        Slot(c.Rank, c.Peer);
        return current;
    }

    RankSlot Slot(int rank, string peer)
    {
        if (rank < 0 || rank >= World) throw Refuse(RefusalKind.InvalidArgument, $"rank {rank} from {peer} is outside world size {World}");
        return current.Slots[rank] ?? throw Refuse(RefusalKind.FailedPrecondition, $"rank {rank} from {peer} is not registered in generation {current.Number}");
    }

    static void CheckText(string what, string value, int max)
    {
        if (value.Length > max) throw new JobRefusal(RefusalKind.InvalidArgument, $"{what} of {value.Length} characters (at most {max})");
    }

    JobRefusal Refuse(RefusalKind kind, string message, JobPhase? over = null)
    {
        log.Info($"refused ({kind}): {message}");
        return new JobRefusal(kind, message, over);
    }

    static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    sealed class Attempt(int number, int world, long startStep, string? resumeFrom, TimeSpan opened)
    {
        public int Number { get; } = number;
        public long StartStep { get; } = startStep;
        public string? ResumeFrom { get; } = resumeFrom;
        public TimeSpan Opened { get; } = opened;
        /// <summary>When its first rank registered; null until one has.</summary>
        public TimeSpan? FirstArrival { get; set; }
        /// <summary>When a rank last reported a step it had not reported before (or registration ended).</summary>
        public TimeSpan LastProgress { get; set; }
        public RankSlot?[] Slots { get; } = new RankSlot?[world];
        public TaskCompletionSource Complete { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public Dictionary<string, Gather> Exchanges { get; } = new();
        public Dictionary<string, string> Failures { get; } = new();
        public Dictionary<long, CheckpointFile[]?[]> Commits { get; } = new();
        /// <summary>The first report of a lost peer, held for PeerLostGrace while the cause may still show itself.</summary>
        public LostPeer? PeerLost { get; set; }
        /// <summary>The ranks that reported a lost peer: their own exit follows from it.</summary>
        public HashSet<int> PeerLostReporters { get; } = [];
        /// <summary>Set when its ranks stopped at a checkpoint on a signal of their own (not the coordinator's stop):
        /// completes when the next generation opens from that checkpoint; registrations for it wait on this.</summary>
        public TaskCompletionSource? NextAfterOwnStop { get; set; }

        /// <summary>The most steps any of its ranks reported.</summary>
        public long StepsDone => Slots.Max(s => s?.Step ?? 0);

        /// <summary>Fails every wait of this generation (registration, exchanges) with Aborted and the message.</summary>
        public void Abort(string message)
        {
            var aborted = new JobRefusal(RefusalKind.Aborted, message);
            Complete.TrySetException(aborted);
            foreach (var x in Exchanges.Values) x.Done.TrySetException(aborted);
        }
    }

    /// <summary>A rank's report that it lost a peer: who, what it said, when (the job's clock).</summary>
    sealed record LostPeer(int Rank, string Message, TimeSpan At);

    sealed class RankSlot(string host, int pid, TimeSpan lastBeat)
    {
        public string Host { get; } = host;
        public int Pid { get; } = pid;
        public TimeSpan LastBeat { get; set; } = lastBeat;
        public long Step { get; set; }
        public StepMetrics? Metrics { get; set; }
        public FinishReport? Finish { get; set; }
    }

    sealed class Gather(int world)
    {
        public string?[] Values { get; } = new string?[world];
        public TaskCompletionSource<string[]> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
