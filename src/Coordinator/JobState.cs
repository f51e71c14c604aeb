// The job as the coordinator sees it: generations of ranks, their rendezvous, data, heartbeats, checkpoints and end.
using Job;
using System.Diagnostics;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Coordinator.Protocol;
using Grpc.Core;

namespace Coordinator;

public enum JobPhase { Registering, Running, Succeeded, Stopped, Diverged, Failed }

/// <summary>How the job ended; Step = steps done by then.</summary>
public sealed record JobOutcome(JobPhase Phase, string Reason, long Step, double TrainLoss, double? ValLoss)
{
    public int ExitCode => Phase switch { JobPhase.Succeeded or JobPhase.Stopped => 0, JobPhase.Diverged => 3, _ => 1 };
}

/// <summary>A rank of the current generation: who it is and what it last said.</summary>
public sealed record RankStatus(int Rank, string Host, int Pid, long Step, double SecondsSinceHeartbeat, bool Finished, StepMetrics? Metrics);

/// <summary>
/// Every decision of the coordinator, behind one lock; the gRPC service only forwards calls here. A generation is one
/// attempt with a full world: it opens for registration, runs once all ranks are in, and ends when every rank finished,
/// or fails (a rank reported an error, stopped heartbeating, exited, or the rendezvous timed out). A failed generation
/// is followed by the next, resumed from the newest valid checkpoint, until job.max_restarts are used up.
/// Requests are validated here: the job id, the generation, rank numbers, sizes, steps. Violations become RpcExceptions
/// whose message names the value.
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
    readonly DivergenceMonitor monitor;
    readonly DataSchedule schedule;
    double learningRateScale = 1;

    public JobState(JobSpec spec, JobLog log)
    {
        spec.Validate();
        (this.spec, this.log) = (spec, log);
        catalog = new CheckpointCatalog(Path.Combine(spec.OutDir, "checkpoints"), log.Info);
        monitor = new DivergenceMonitor(spec.Divergence);
        var (step, from, manifest) = InitialCheckpoint();
        schedule = new DataSchedule(manifest?.DataSkips);
        learningRateScale = manifest?.LearningRateScale ?? 1;
        current = new Attempt(1, spec.Options.WorldSize, step, from, clock.Elapsed);
        log.Info($"job {spec.JobId}: world size {World}, {spec.Steps} steps, {spec.Train.Plan.Count:N0} training sequences " +
                 $"(data {spec.Train.Plan.Fingerprint()}); generation 1 waits for its ranks" + (from is null ? "" : $"; resuming from {from} (step {step})"));
        watchdog = new Timer(_ => Watch(), null, TimeSpan.FromMilliseconds(250), TimeSpan.FromMilliseconds(250));
        // A coordinator restarted after its job finished (a Deployment's pod moved) has nothing left to run.
        if (step >= spec.Steps)
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

    public async Task<RegisterReply> Register(RegisterRequest r, string peer, CancellationToken cancel)
    {
        Attempt g;
        int rank;
        lock (gate)
        {
            CheckJob(r.JobId, peer);
            if (IsOver) throw Refuse(StatusCode.FailedPrecondition, $"job {spec.JobId} is over ({phase}); registration from {peer} refused");
            if (r.WorldSize != 0 && r.WorldSize != World)
                throw Refuse(StatusCode.InvalidArgument, $"a rank at {peer} says WORLD_SIZE={r.WorldSize}, but job {spec.JobId} has job.world_size = {World}");
            if (r.RequestedRank < -1 || r.RequestedRank >= World)
                throw Refuse(StatusCode.InvalidArgument, $"a rank at {peer} asks for rank {r.RequestedRank}, beyond the world size {World} (ranks 0..{World - 1})");
            if (r.Host.Length > MaxKey) throw Refuse(StatusCode.InvalidArgument, $"host name of {r.Host.Length} characters (at most {MaxKey})");
            g = current;
            if (phase != JobPhase.Registering)
                throw Refuse(StatusCode.ResourceExhausted, $"generation {g.Number} already has all {World} ranks; a further rank at {peer} ({r.Host} pid {r.Pid}) refused");
            if (r.RequestedRank >= 0)
            {
                rank = r.RequestedRank;
                if (g.Slots[rank] is { } taken)
                    throw Refuse(StatusCode.AlreadyExists, $"rank {rank} of generation {g.Number} is already registered by {taken.Host} pid {taken.Pid}; {r.Host} pid {r.Pid} refused");
            }
            else rank = Array.FindIndex(g.Slots, s => s is null);
            g.Slots[rank] = new RankSlot(r.Host, r.Pid, clock.Elapsed);
            log.Info($"generation {g.Number}: rank {rank} registered ({r.Host} pid {r.Pid}); {g.Slots.Count(s => s is not null)} of {World}");
            if (g.Slots.All(s => s is not null))
            {
                phase = JobPhase.Running;
                foreach (var s in g.Slots) s!.LastBeat = clock.Elapsed;
                g.LastProgress = clock.Elapsed;
                log.Info($"generation {g.Number}: all {World} ranks registered; training from step {g.StartStep}");
                g.Complete.TrySetResult();
            }
        }
        try
        {
            await g.Complete.Task.WaitAsync(cancel);
        }
        catch (OperationCanceledException)
        {
            lock (gate)
            {
                if (g == current && phase == JobPhase.Registering && g.Slots[rank] is { } mine && mine.Pid == r.Pid && mine.Host == r.Host)
                {
                    g.Slots[rank] = null; // the caller gave up: free its place for a replacement
                    log.Info($"generation {g.Number}: rank {rank} ({r.Host} pid {r.Pid}) left before the world was complete");
                }
            }
            throw;
        }
        return new RegisterReply
        {
            Generation = g.Number, Rank = rank, WorldSize = World, ConfigJson = spec.ConfigJson, StartStep = g.StartStep,
            ResumeFrom = g.ResumeFrom ?? "", Bootstrap = new Bootstrap { Backend = spec.Options.Backend.ToString().ToLowerInvariant(), GroupKey = $"{spec.JobId}/g{g.Number}" },
            PlanSequences = spec.Train.Plan.Count, PlanFingerprint = spec.Train.Plan.Fingerprint(),
            HeartbeatIntervalS = spec.Options.HeartbeatIntervalS, HeartbeatTimeoutS = spec.Options.HeartbeatTimeoutS,
            LearningRateScale = LearningRateScale,
        };
    }

    public async Task<ExchangeReply> Exchange(ExchangeRequest r, string peer, CancellationToken cancel)
    {
        Task<string[]> all;
        lock (gate)
        {
            var g = Member(r.JobId, r.Generation, r.Rank, peer);
            CheckText("key", r.Key, MaxKey);
            CheckText("value", r.Value, MaxText);
            if (!g.Exchanges.TryGetValue(r.Key, out var x)) g.Exchanges[r.Key] = x = new Gather(World);
            if (x.Values[r.Rank] is not null) throw Refuse(StatusCode.AlreadyExists, $"exchange '{r.Key}': rank {r.Rank} published twice");
            x.Values[r.Rank] = r.Value;
            if (x.Values.All(v => v is not null)) x.Done.TrySetResult(x.Values.Select(v => v!).ToArray());
            all = x.Done.Task;
        }
        var timeout = TimeSpan.FromSeconds(spec.Options.RendezvousTimeoutS);
        try
        {
            return new ExchangeReply { Values = { await all.WaitAsync(timeout, cancel) } };
        }
        catch (TimeoutException)
        {
            string[] missing;
            lock (gate) missing = current.Exchanges.TryGetValue(r.Key, out var x)
                ? x.Values.Select((v, i) => v is null ? i.ToString() : null).OfType<string>().ToArray() : [];
            throw new RpcException(new Status(StatusCode.DeadlineExceeded,
                $"exchange '{r.Key}': rank {r.Rank} waited {timeout.TotalSeconds:0} s; ranks [{string.Join(", ", missing)}] never published"));
        }
    }

    public BatchesReply Batches(BatchesRequest r, string peer)
    {
        if (r.Count < 1 || r.Count > MaxBatchSteps) throw Refuse(StatusCode.InvalidArgument, $"batches: count {r.Count} outside [1, {MaxBatchSteps}]");
        if (r.FirstStep < 0 || r.FirstStep >= spec.Steps) throw Refuse(StatusCode.InvalidArgument, $"batches: first_step {r.FirstStep} outside [0, {spec.Steps})");
        long[] dataSteps;
        lock (gate)
        {
            Member(r.JobId, r.Generation, r.Rank, peer);
            dataSteps = [.. Enumerable.Range(0, (int)(Math.Min(spec.Steps, r.FirstStep + r.Count) - r.FirstStep)).Select(i => schedule.DataStep(r.FirstStep + i))];
        }
        var reply = new BatchesReply();
        for (int i = 0; i < dataSteps.Length; i++)
            reply.Steps.Add(new StepBatch { Step = r.FirstStep + i, Sequences = { spec.Train.RankRows(dataSteps[i], r.Rank / spec.Options.VocabParallel, spec.DataParallel, spec.MicroBatches) } });
        return reply;
    }

    public HeartbeatReply Heartbeat(HeartbeatRequest r, string peer)
    {
        var reported = new List<StepMetrics>();
        var reply = Beat(r, peer, reported, out var rolledBack);
        foreach (var m in reported) StepReported?.Invoke(r.Rank, m);
        Announce(rolledBack);
        return reply;
    }

    HeartbeatReply Beat(HeartbeatRequest r, string peer, List<StepMetrics> reported, out Reopened? rolledBack)
    {
        rolledBack = null;
        lock (gate)
        {
            CheckJob(r.JobId, peer);
            if (Over(r.Generation) is { } over) return over;
            var slot = Slot(r.Rank, peer);
            slot.LastBeat = clock.Elapsed;
            if (r.Step < 0 || r.Step > spec.Steps) throw Refuse(StatusCode.InvalidArgument, $"heartbeat: step {r.Step} outside [0, {spec.Steps}]");
            if (r.Step > slot.Step) current.LastProgress = clock.Elapsed; // the current generation: Over returned otherwise
            slot.Step = r.Step;
            if (r.Metrics.Count > MaxBatchSteps) throw Refuse(StatusCode.InvalidArgument, $"heartbeat: {r.Metrics.Count} logged steps (at most {MaxBatchSteps})");
            foreach (var m in r.Metrics.Where(m => m.Step > (slot.Metrics?.Step ?? 0)))
            {
                reported.Add(m); // a step not reported before: a heartbeat that timed out on the way back may be resent
                slot.Metrics = m;
                // Rank 0's loss is the global batch's, its statistics replica 0's: the rules read rank 0 alone.
                if (r.Rank == 0 && !IsOver && Judge(m.Step, m.TrainLoss, m.MaxAbsLogit, m.MuNorm) is { } back)
                {
                    rolledBack = back;
                    break;
                }
            }
            if (Over(r.Generation) is { } ended) return ended; // the rules may have ended the job or the generation
            return stopReason is null || IsOver
                ? new HeartbeatReply { Command = Command.Continue }
                : new HeartbeatReply { Command = Command.Stop, Reason = stopReason };
        }
    }

    // Caller holds the lock. ABORT once the job failed or diverged, RESTART once `generation` was replaced; else null.
    HeartbeatReply? Over(int generation) =>
        phase is JobPhase.Failed or JobPhase.Diverged ? new HeartbeatReply { Command = Command.Abort, Reason = outcome.Task.Result.Reason }
        : generation != current.Number ? new HeartbeatReply { Command = Command.Restart, Reason = $"generation {generation} is over; generation {current.Number} replaces it" }
        : null;

    public void ReportFailure(FailureRequest r, string peer)
    {
        int generation;
        lock (gate)
        {
            CheckJob(r.JobId, peer);
            CheckText("message", r.Message, MaxText);
            CheckText("key", r.Key, MaxKey);
            if (r.Generation != current.Number)
            {
                log.Info($"(after generation {r.Generation}) rank {r.Rank} reported: {r.Message}");
                return;
            }
            var g = Member(r.JobId, r.Generation, r.Rank, peer);
            if (r.Key.Length > 0)
            {
                g.Failures.TryAdd(r.Key, r.Message);
                if (r.Key.Contains("/stalled/", StringComparison.Ordinal)) return; // a note for blaming, not a failure yet
            }
            generation = g.Number;
        }
        FailGeneration(generation, $"rank {r.Rank} failed: {r.Message}");
    }

    public ReadFailureReply ReadFailure(ReadFailureRequest r, string peer)
    {
        lock (gate)
        {
            var g = Member(r.JobId, r.Generation, r.Rank, peer);
            return g.Failures.TryGetValue(r.Key, out var message) ? new ReadFailureReply { Found = true, Message = message } : new ReadFailureReply();
        }
    }

    public CommitReply Commit(CommitRequest r, string peer)
    {
        lock (gate)
        {
            var g = Member(r.JobId, r.Generation, r.Rank, peer);
            if (r.Step < 1 || r.Step > spec.Steps) throw Refuse(StatusCode.InvalidArgument, $"commit: step {r.Step} outside [1, {spec.Steps}]");
            if (r.Files.Count > MaxFiles) throw Refuse(StatusCode.InvalidArgument, $"commit: {r.Files.Count} files (at most {MaxFiles})");
            foreach (var f in r.Files)
            {
                if (!FileName().IsMatch(f.Name) || f.Name == CheckpointCatalog.ManifestName)
                    throw Refuse(StatusCode.InvalidArgument, $"commit: file name '{f.Name}' is not a plain file name other than {CheckpointCatalog.ManifestName}");
                if (!Sha256Hex().IsMatch(f.Sha256)) throw Refuse(StatusCode.InvalidArgument, $"commit: sha256 '{f.Sha256}' of {f.Name} is not 64 lowercase hex digits");
                if (f.Bytes < 0) throw Refuse(StatusCode.InvalidArgument, $"commit: {f.Name} has {f.Bytes} bytes");
            }
            if (!g.Commits.TryGetValue(r.Step, out var parts)) g.Commits[r.Step] = parts = new CheckpointFile[World][];
            parts[r.Rank] = r.Files.Select(f => new CheckpointFile(f.Name, f.Bytes, f.Sha256)).ToArray();
            if (parts.Any(p => p is null)) return new CommitReply { Committed = false };

            var files = parts.SelectMany(p => p!).ToList();
            var duplicate = files.GroupBy(f => f.Name).FirstOrDefault(n => n.Count() > 1);
            if (duplicate is not null) throw Refuse(StatusCode.InvalidArgument, $"commit: step {r.Step}: two ranks wrote {duplicate.Key}");
            var (epoch, position) = spec.Train.CursorAt(schedule.DataStep(r.Step));
            try
            {
                catalog.Commit(new CheckpointManifest(r.Step, spec.JobId, g.Number, World, epoch, position, files, spec.ConfigJson,
                    schedule.Skips.Count > 0 ? [.. schedule.Skips] : null, learningRateScale != 1 ? learningRateScale : null), spec.Options.KeepCheckpoints);
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                throw Refuse(StatusCode.FailedPrecondition, $"checkpoint at step {r.Step} not committed: {e.Message}");
            }
            g.Commits.Remove(r.Step);
            log.Info($"checkpoint at step {r.Step} committed: {files.Count} files, {files.Sum(f => f.Bytes) / 1e6:F1} MB, data cursor epoch {epoch} position {position}");
            return new CommitReply { Committed = true };
        }
    }

    public FinishReply Finish(FinishRequest r, string peer)
    {
        FinishReply reply;
        Reopened? rolledBack;
        lock (gate) reply = Finished(r, peer, out rolledBack);
        Announce(rolledBack);
        return reply;
    }

    // Caller holds the lock.
    FinishReply Finished(FinishRequest r, string peer, out Reopened? rolledBack)
    {
        rolledBack = null;
        var done = new FinishReply { Command = Command.Continue };
        CheckJob(r.JobId, peer);
        if (r.Generation < current.Number && !IsOver)
        {
            // A rollback (or a failure) ended this rank's generation while it ran its last step: the next one needs it.
            log.Info($"(after generation {r.Generation}) rank {r.Rank} finished at step {r.Step}; told to restart");
            return new FinishReply { Command = Command.Restart, Reason = $"generation {r.Generation} is over; generation {current.Number} replaces it" };
        }
        var g = Member(r.JobId, r.Generation, r.Rank, peer);
        if (IsOver)
        {
            // The job has already ended (e.g. failed while this rank ran its last step): that outcome stands.
            log.Info($"(after the job ended {phase.ToString().ToLowerInvariant()}) rank {r.Rank} finished at step {r.Step}");
            return done;
        }
        // Every rank reports the global loss; the first non-finite one is judged (its heartbeat may not have got through).
        if (!r.Stopped && !double.IsFinite(r.TrainLoss) && Judge(r.Step, r.TrainLoss, double.NaN, double.NaN) is { } back)
        {
            rolledBack = back;
            return new FinishReply { Command = Command.Restart, Reason = $"rolled back to step {back.Step}: generation {back.Generation} replaces generation {r.Generation}" };
        }
        if (IsOver) return done; // divergence.action = stop ended the job
        var slot = g.Slots[r.Rank]!;
        slot.Finish = r;
        slot.Step = r.Step;
        if (!g.Slots.All(s => s!.Finish is not null)) return done;
        var last = g.Slots[0]!.Finish!;
        var (end, reason) = g.Slots.Any(s => s!.Finish!.Stopped) ? (JobPhase.Stopped, $"stopped at step {last.Step} ({stopReason}); continue it with job.resume=true")
            : !double.IsFinite(last.TrainLoss) ? (JobPhase.Diverged, $"diverged: training loss {last.TrainLoss} at step {last.Step}")
            : (JobPhase.Succeeded, $"finished {last.Step} steps");
        End(new JobOutcome(end, reason, last.Step, last.TrainLoss, last.HasValLoss ? last.ValLoss : null));
        return done;
    }

    /// <summary>A generation opened under the lock (after a failure or a rollback), announced outside it: the step it
    /// starts from, its number.</summary>
    sealed record Reopened(long Step, int Generation);

    void Announce(Reopened? reopened)
    {
        if (reopened is null) return;
        Rewound?.Invoke(reopened.Step);
        GenerationOpened?.Invoke(reopened.Generation);
    }

    // Caller holds the lock. Runs the rules over one of rank 0's logged steps and, when one fires, the configured action.
    Reopened? Judge(long step, double loss, double maxAbsLogit, double muNorm)
    {
        if (monitor.Check(step, loss, maxAbsLogit, muNorm) is not { } fired) return null;
        divergenceEvents++;
        var o = spec.Divergence;
        log.Info($"generation {current.Number}: {fired}");
        if (o.Action == DivergenceAction.Warn)
        {
            monitor.Record(step, loss, maxAbsLogit, muNorm);
            log.Info("divergence.action = warn: training goes on");
            return null;
        }
        // Back to the newest checkpoint at or before the last step that passed every rule; later ones saw the trouble.
        long healthy = monitor.LastHealthyStep;
        var back = catalog.LatestValid(atMost: healthy);
        long to = back?.Manifest.Step ?? 0;
        catalog.SetAside(to, current.Number);
        string where = back is null ? "the start (no checkpoint before the trouble)" : $"checkpoint step {to} ({back.Value.Directory})";
        if (o.Action == DivergenceAction.Stop || stopReason is not null)
        {
            string why = o.Action == DivergenceAction.Stop ? "divergence.action = stop" : $"the job was stopping ({stopReason})";
            End(new JobOutcome(JobPhase.Diverged, $"{fired}; {why}, so the job stops. The last healthy step was {healthy}; " +
                $"job.resume=true continues from {where}", step, loss, null));
            return null;
        }
        if (rollbacks >= o.MaxRollbacks)
        {
            End(new JobOutcome(JobPhase.Diverged, $"{fired}; gave up after {rollbacks} rollbacks (divergence.max_rollbacks = {o.MaxRollbacks}). " +
                $"job.resume=true continues from {where}", step, loss, null));
            return null;
        }
        rollbacks++;
        var (first, next) = schedule.Skip(to, step);
        long skipped = (step - to) * spec.Train.BatchSize; // the batches the rolled-back steps read; earlier skips were counted then
        skippedSequences += skipped;
        learningRateScale *= o.LearningRateFactor;
        monitor.Truncate(to);
        current.Abort($"generation {current.Number} was rolled back: {fired}");
        Open(to, back?.Directory);
        log.Info($"rollback {rollbacks} of {o.MaxRollbacks}: generation {current.Number} resumes from {where}; the data of steps {to + 1}..{step} " +
                 $"is skipped ({skipped:N0} sequences: from step {to + 1} on the job reads global batch {next} onwards instead of {first}); " +
                 $"learning rate x {o.LearningRateFactor} (now {learningRateScale:G4} x the schedule of train.learning_rate)");
        return new Reopened(to, current.Number);
    }

    // Caller holds the lock. The next generation, registering, to start from `step` (checkpoint `from`, or none).
    void Open(long step, string? from)
    {
        current = new Attempt(current.Number + 1, World, step, from, clock.Elapsed);
        phase = JobPhase.Registering;
    }

    /// <summary>Ends generation <paramref name="generation"/> (if it is still the current one and the job still runs)
    /// and opens the next, resumed from the newest valid checkpoint, or fails the job when no restart is left.</summary>
    public void FailGeneration(int generation, string reason)
    {
        Reopened opened;
        lock (gate)
        {
            if (generation != current.Number || IsOver)
            {
                log.Info($"(after generation {generation}) {reason}");
                return;
            }
            var g = current;
            log.Info($"generation {g.Number} failed: {reason}");
            g.Abort($"generation {g.Number} was aborted: {reason}");
            if (stopReason is not null)
            {
                End(new JobOutcome(JobPhase.Failed, $"generation {g.Number} failed while stopping ({stopReason}), so it is not restarted: {reason}; " +
                    "continue from the newest checkpoint with job.resume=true", g.StepsDone, double.NaN, null));
                return;
            }
            if (restarts >= spec.Options.MaxRestarts)
            {
                End(new JobOutcome(JobPhase.Failed, $"gave up after {restarts} restarts (job.max_restarts = {spec.Options.MaxRestarts}); last failure: {reason}",
                    g.StepsDone, double.NaN, null));
                return;
            }
            restarts++;
            var latest = catalog.LatestValid();
            Open(latest?.Manifest.Step ?? 0, latest?.Directory);
            log.Info($"restart {restarts} of {spec.Options.MaxRestarts}: generation {current.Number} resumes from " +
                     (latest is null ? "the start (no checkpoint committed yet)" : $"checkpoint step {current.StartStep} ({latest.Value.Directory})"));
            monitor.Truncate(current.StartStep);
            opened = new Reopened(current.StartStep, current.Number);
        }
        Announce(opened);
    }

    /// <summary>Asks the ranks to stop at a step they agree on, checkpoint there, and exit; the job ends Stopped.</summary>
    public void RequestStop(string reason)
    {
        lock (gate)
        {
            if (IsOver || stopReason is not null) return;
            stopReason = reason;
            if (phase == JobPhase.Registering)
            {
                End(new JobOutcome(JobPhase.Stopped, $"stopped ({reason}) before generation {current.Number} began, at step {current.StartStep}",
                    current.StartStep, double.NaN, null));
                return;
            }
            log.Info($"stop requested ({reason}): the ranks checkpoint at the next step and exit");
        }
    }

    /// <summary>Ends the job as failed at once (e.g. the launcher could not start ranks).</summary>
    public void Abort(string reason)
    {
        lock (gate)
        {
            if (IsOver) return;
            End(new JobOutcome(JobPhase.Failed, reason, current.StepsDone, double.NaN, null));
        }
    }

    public void Dispose() => watchdog.Dispose();

    bool IsOver => phase is JobPhase.Succeeded or JobPhase.Stopped or JobPhase.Diverged or JobPhase.Failed;

    // Caller holds the lock.
    void End(JobOutcome o)
    {
        phase = o.Phase;
        current.Abort($"job {spec.JobId} ended: {o.Reason}");
        log.Info($"job {spec.JobId} {o.Phase.ToString().ToLowerInvariant()}: {o.Reason}");
        outcome.TrySetResult(o);
    }

    void Watch()
    {
        int? failing = null;
        string reason = "";
        lock (gate)
        {
            var now = clock.Elapsed;
            var g = current;
            if (phase == JobPhase.Registering && (now - g.Opened).TotalSeconds > spec.Options.RendezvousTimeoutS)
            {
                var missing = Enumerable.Range(0, World).Where(r => g.Slots[r] is null);
                (failing, reason) = (g.Number, $"rendezvous timed out after {spec.Options.RendezvousTimeoutS:0.#} s: ranks [{string.Join(", ", missing)}] of {World} never registered");
            }
            else if (phase == JobPhase.Running)
            {
                foreach (var (s, r) in g.Slots.Select((s, r) => (s!, r)))
                {
                    double silent = (now - s.LastBeat).TotalSeconds;
                    if (s.Finish is null && silent > spec.Options.HeartbeatTimeoutS)
                    {
                        (failing, reason) = (g.Number, $"rank {r} ({s.Host} pid {s.Pid}) sent no heartbeat for {silent:0.0} s (job.heartbeat_timeout_s = {spec.Options.HeartbeatTimeoutS})");
                        break;
                    }
                }
                double still = (now - g.LastProgress).TotalSeconds;
                if (failing is null && spec.Options.StepTimeoutS > 0 && still > spec.Options.StepTimeoutS && g.Slots.All(s => s!.Finish is null && s.Step < spec.Steps))
                    (failing, reason) = (g.Number, $"no rank finished a step for {still:0} s (job.step_timeout_s = {spec.Options.StepTimeoutS}), though all beat: " +
                                                   $"hung in a collective? ranks at steps [{string.Join(", ", g.Slots.Select(s => s!.Step))}]");
            }
        }
        if (failing is int n) FailGeneration(n, reason);
    }

    (long Step, string? From, CheckpointManifest? Manifest) InitialCheckpoint()
    {
        var latest = catalog.LatestValid();
        if (!spec.Options.Resume)
        {
            if (latest is not null)
                throw new ArgumentException($"run.out_dir = '{spec.OutDir}' holds a checkpoint at step {latest.Value.Manifest.Step}: " +
                                            "set job.resume=true to continue that run, or choose another run.out_dir");
            return (0, null, null);
        }
        if (latest is null)
        {
            log.Info($"job.resume = true, but {catalog.Root} holds no valid checkpoint: starting at step 0");
            return (0, null, null);
        }
        var (manifest, dir) = latest.Value;
        string? Section(string json, string name) => JsonNode.Parse(json)?[name]?.ToJsonString();
        foreach (var section in new[] { "model", "data" })
            if (Section(manifest.Config, section) != Section(spec.ConfigJson, section))
                throw new ArgumentException($"cannot resume from {dir}: its {section} section {Section(manifest.Config, section)} differs from this run's {Section(spec.ConfigJson, section)}");
        return (manifest.Step, dir, manifest);
    }

    // Caller holds the lock.
    void CheckJob(string jobId, string peer)
    {
        if (jobId != spec.JobId)
            throw Refuse(StatusCode.PermissionDenied, $"a call from {peer} names job '{Clip(jobId)}'; this coordinator runs job '{spec.JobId}'");
    }

    // Caller holds the lock. The current generation, after checking the job, the generation and the rank.
    Attempt Member(string jobId, int generation, int rank, string peer)
    {
        CheckJob(jobId, peer);
        if (generation != current.Number)
            throw Refuse(StatusCode.Aborted, $"rank {rank} at {peer} speaks for generation {generation}; the current one is {current.Number}");
        if (phase != JobPhase.Running && !IsOver)
            throw Refuse(StatusCode.FailedPrecondition, $"generation {generation} is not running yet ({phase})");
        Slot(rank, peer);
        return current;
    }

    RankSlot Slot(int rank, string peer)
    {
        if (rank < 0 || rank >= World) throw Refuse(StatusCode.InvalidArgument, $"rank {rank} from {peer} is outside world size {World}");
        return current.Slots[rank] ?? throw Refuse(StatusCode.FailedPrecondition, $"rank {rank} from {peer} is not registered in generation {current.Number}");
    }

    static void CheckText(string what, string value, int max)
    {
        if (value.Length > max) throw new RpcException(new Status(StatusCode.InvalidArgument, $"{what} of {value.Length} characters (at most {max})"));
    }

    RpcException Refuse(StatusCode code, string message)
    {
        log.Info($"refused ({code}): {message}");
        return new RpcException(new Status(code, message));
    }

    static string Clip(string s) => s.Length <= 64 ? s : s[..64] + "…";

    [GeneratedRegex("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex FileName();

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Hex();

    sealed class Attempt(int number, int world, long startStep, string? resumeFrom, TimeSpan opened)
    {
        public int Number { get; } = number;
        public long StartStep { get; } = startStep;
        public string? ResumeFrom { get; } = resumeFrom;
        public TimeSpan Opened { get; } = opened;
        /// <summary>When a rank last reported a step it had not reported before (or registration ended).</summary>
        public TimeSpan LastProgress { get; set; }
        public RankSlot?[] Slots { get; } = new RankSlot?[world];
        public TaskCompletionSource Complete { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public Dictionary<string, Gather> Exchanges { get; } = new();
        public Dictionary<string, string> Failures { get; } = new();
        public Dictionary<long, CheckpointFile[]?[]> Commits { get; } = new();

        /// <summary>The most steps any of its ranks reported.</summary>
        public long StepsDone => Slots.Max(s => s?.Step ?? 0);

        /// <summary>Fails every wait of this generation (registration, exchanges) with Aborted and the message.</summary>
        public void Abort(string message)
        {
            var aborted = new RpcException(new Status(StatusCode.Aborted, message));
            Complete.TrySetException(aborted);
            foreach (var x in Exchanges.Values) x.Done.TrySetException(aborted);
        }
    }

    sealed class RankSlot(string host, int pid, TimeSpan lastBeat)
    {
        public string Host { get; } = host;
        public int Pid { get; } = pid;
        public TimeSpan LastBeat { get; set; } = lastBeat;
        public long Step { get; set; }
        public StepMetrics? Metrics { get; set; }
        public FinishRequest? Finish { get; set; }
    }

    sealed class Gather(int world)
    {
        public string?[] Values { get; } = new string?[world];
        public TaskCompletionSource<string[]> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
