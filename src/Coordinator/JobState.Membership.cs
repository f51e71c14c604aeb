// The job's membership: registration into a generation, the rendezvous exchanges, heartbeats, failures reported.
using Job;

namespace Coordinator;

public sealed partial class JobState
{
    /// <summary>A place in the generation now registering; completes once the world is full (every rank in).</summary>
    public async Task<Registration> Register(Candidate r, CancellationToken cancel)
    {
        Attempt g;
        int rank;
        Task? nextGeneration = null;
        lock (gate)
        {
            CheckJob(r.JobId, r.Peer);
            if (IsOver) throw Refuse(RefusalKind.FailedPrecondition, $"job {spec.JobId} is over ({phase}); registration from {r.Peer} refused", over: phase);
            if (r.WorldSize != 0 && r.WorldSize != World)
                throw Refuse(RefusalKind.InvalidArgument, $"a rank at {r.Peer} says WORLD_SIZE={r.WorldSize}, but job {spec.JobId} has job.world_size = {World}");
            if (r.RequestedRank < -1 || r.RequestedRank >= World)
                throw Refuse(RefusalKind.InvalidArgument, $"a rank at {r.Peer} asks for rank {r.RequestedRank}, beyond the world size {World} (ranks 0..{World - 1})");
            if (r.Host.Length > MaxKey) throw Refuse(RefusalKind.InvalidArgument, $"host name of {r.Host.Length} characters (at most {MaxKey})");
            g = current;
            // A rank restarted after its generation stopped on its own signal may come back before the others have
            // finished: it waits for the next generation.
            if (phase != JobPhase.Registering && g.NextAfterOwnStop is { } next) nextGeneration = next.Task;
            rank = nextGeneration is null ? Join(g, r) : -1;
        }
        if (nextGeneration is not null)
        {
            await nextGeneration.WaitAsync(cancel);
            return await Register(r, cancel);
        }
        try
        {
            await g.Complete.Task.WaitAsync(cancel);
        }
        catch (OperationCanceledException)
        {
            lock (gate) Leave(g, rank, r);
            throw;
        }
        return new Registration(g.Number, rank, g.StartStep, g.ResumeFrom, LearningRateScale);
    }

    // Caller holds the lock. A place in `g`, registering: the rank asked for, or the first free one.
    int Join(Attempt g, Candidate r)
    {
        if (phase != JobPhase.Registering)
            throw Refuse(RefusalKind.ResourceExhausted, $"generation {g.Number} already has all {World} ranks; a further rank at {r.Peer} ({r.Host} pid {r.Pid}) refused");
        int rank = r.RequestedRank;
        if (rank >= 0 && g.Slots[rank] is { } taken)
            throw Refuse(RefusalKind.AlreadyExists, $"rank {rank} of generation {g.Number} is already registered by {taken.Host} pid {taken.Pid}; {r.Host} pid {r.Pid} refused");
        if (rank < 0) rank = Array.FindIndex(g.Slots, s => s is null);
        g.Slots[rank] = new RankSlot(r.Host, r.Pid, clock.Elapsed);
        g.FirstArrival ??= clock.Elapsed;
        log.Info($"generation {g.Number}: rank {rank} registered ({r.Host} pid {r.Pid}); {g.Slots.Count(s => s is not null)} of {World}");
        if (g.Slots.All(s => s is not null)) Start(g);
        return rank;
    }

    // Caller holds the lock. The world of `g` is complete: it runs.
    void Start(Attempt g)
    {
        phase = JobPhase.Running;
        foreach (var s in g.Slots) s!.LastBeat = clock.Elapsed;
        g.LastProgress = clock.Elapsed;
        log.Info($"generation {g.Number}: all {World} ranks registered; training from step {g.StartStep}");
        g.Complete.TrySetResult();
    }

    // Caller holds the lock. The caller gave up waiting for the world: free its place for a replacement.
    void Leave(Attempt g, int rank, Candidate r)
    {
        if (g == current && phase == JobPhase.Registering && g.Slots[rank] is { } mine && mine.Pid == r.Pid && mine.Host == r.Host)
        {
            g.Slots[rank] = null;
            log.Info($"generation {g.Number}: rank {rank} ({r.Host} pid {r.Pid}) left before the world was complete");
        }
    }

    /// <summary>Publishes the value of rank `c.Rank` of a group of `size` callers (0: the whole world) under `key`;
    /// completes with every member's value, in group rank order.</summary>
    public async Task<string[]> Exchange(Caller c, string key, string value, int size, CancellationToken cancel)
    {
        Task<string[]> all;
        lock (gate)
        {
            var g = Member(c);
            CheckText("key", key, MaxKey);
            CheckText("value", value, MaxText);
            size = GroupSize(c, key, size);
            if (!g.Exchanges.TryGetValue(key, out var x)) g.Exchanges[key] = x = new Gather(size);
            if (x.Values.Length != size)
                throw Refuse(RefusalKind.InvalidArgument, $"exchange '{key}': rank {c.Rank} says the group has {size} ranks, an earlier caller said {x.Values.Length}");
            if (x.Values[c.Rank] is not null) throw Refuse(RefusalKind.AlreadyExists, $"exchange '{key}': rank {c.Rank} published twice");
            x.Values[c.Rank] = value;
            if (x.Values.All(v => v is not null)) x.Done.TrySetResult(x.Values.Select(v => v!).ToArray());
            all = x.Done.Task;
        }
        var timeout = TimeSpan.FromSeconds(spec.Options.RendezvousTimeoutS);
        try
        {
            return await all.WaitAsync(timeout, cancel);
        }
        catch (TimeoutException)
        {
            string[] missing;
            lock (gate) missing = current.Exchanges.TryGetValue(key, out var x)
                ? x.Values.Select((v, i) => v is null ? i.ToString() : null).OfType<string>().ToArray() : [];
            throw new JobRefusal(RefusalKind.DeadlineExceeded,
                $"exchange '{key}': rank {c.Rank} waited {timeout.TotalSeconds:0} s; ranks [{string.Join(", ", missing)}] never published");
        }
    }

    // Caller holds the lock. An exchange's group size, 1..World (0 stands for World), with the caller's rank inside it.
    int GroupSize(Caller c, string key, int size)
    {
        if (size == 0) size = World;
        if (size < 1 || size > World)
            throw Refuse(RefusalKind.InvalidArgument, $"exchange '{key}': a group of {size} ranks in a world of {World} (expected 1..{World})");
        if (c.Rank >= size)
            throw Refuse(RefusalKind.InvalidArgument, $"exchange '{key}': rank {c.Rank} outside its group of {size} ranks");
        return size;
    }

    /// <summary>A rank is alive with `step` steps done and these logged steps (oldest first); answers what it must do.</summary>
    public RankOrder Heartbeat(Caller c, long step, IReadOnlyList<StepMetrics> metrics)
    {
        var reported = new List<StepMetrics>();
        var order = Beat(c, step, metrics, reported, out var rolledBack);
        foreach (var m in reported) StepReported?.Invoke(c.Rank, m);
        Announce(rolledBack);
        return order;
    }

    RankOrder Beat(Caller c, long step, IReadOnlyList<StepMetrics> metrics, List<StepMetrics> reported, out Reopened? rolledBack)
    {
        rolledBack = null;
        lock (gate)
        {
            CheckJob(c.JobId, c.Peer);
            if (Over(c.Generation) is { } over) return over;
            var slot = Slot(c.Rank, c.Peer);
            slot.LastBeat = clock.Elapsed;
            if (step < 0 || step > spec.Steps) throw Refuse(RefusalKind.InvalidArgument, $"heartbeat: step {step} outside [0, {spec.Steps}]");
            if (step > slot.Step) current.LastProgress = clock.Elapsed; // the current generation: Over returned otherwise
            if (c.Rank == 0) stepsTrained += Math.Max(0, step - Math.Max(slot.Step, current.StartStep)); // a new slot's Step is 0
            slot.Step = step;
            if (metrics.Count > MaxBatchSteps) throw Refuse(RefusalKind.InvalidArgument, $"heartbeat: {metrics.Count} logged steps (at most {MaxBatchSteps})");
            foreach (var m in metrics.Where(m => m.Step > (slot.Metrics?.Step ?? 0)))
            {
                reported.Add(m); // a step not reported before: a heartbeat that timed out on the way back may be resent
                slot.Metrics = m;
                // Rank 0's loss is the global batch's, its statistics replica 0's: the rules read rank 0 alone.
                if (c.Rank == 0 && !IsOver && Judge(m) is { } back)
                {
                    rolledBack = back;
                    break;
                }
            }
            if (Over(c.Generation) is { } ended) return ended; // the rules may have ended the job or the generation
            return stopReason is null || IsOver ? RankOrder.Continue : new RankOrder(OrderKind.Stop, stopReason);
        }
    }

    // Caller holds the lock. ABORT once the job failed or diverged, RESTART once `generation` was replaced; else null.
    RankOrder? Over(int generation) =>
        phase is JobPhase.Failed or JobPhase.Diverged ? new RankOrder(OrderKind.Abort, outcome.Task.Result.Reason)
        : generation != current.Number ? Replaced(generation)
        : null;

    RankOrder Replaced(int generation) => new(OrderKind.Restart, $"generation {generation} is over; generation {current.Number} replaces it");

    /// <summary>A rank's failure: under a key (a note other ranks may read; a collective group's report is a lost peer),
    /// or the end of its generation. A configuration or resource failure ends the job at once, also when it arrives
    /// after a lost peer's report already failed its generation. A lost peer fails the generation only after
    /// <see cref="PeerLostGrace"/>, so that the rank that vanished is named first when its own report, its process's
    /// exit (<see cref="RankExited"/>) or its missing heartbeats show it by then.</summary>
    public void ReportFailure(Caller c, string key, string message, FailureClass kind = FailureClass.Other)
    {
        int generation;
        lock (gate)
        {
            CheckJob(c.JobId, c.Peer);
            CheckText("message", message, MaxText);
            CheckText("key", key, MaxKey);
            if (c.Generation < 1 || c.Generation > current.Number)
                throw Refuse(RefusalKind.InvalidArgument, $"rank {c.Rank} reports a failure of generation {c.Generation}, which does not exist (the current one is {current.Number})");
            bool fatal = kind is FailureClass.Configuration or FailureClass.Resource;
            if (c.Generation != current.Number)
            {
                log.Info($"(after generation {c.Generation}) rank {c.Rank} reported: {message}");
                if (fatal && !IsOver) EndFatal(c.Rank, message, kind);
                return;
            }
            var g = Member(c);
            if (key.Length > 0)
            {
                g.Failures.TryAdd(key, message);
                if (key.Contains("/stalled/", StringComparison.Ordinal)) return; // a note for blaming, not a failure yet
                kind = FailureClass.PeerLost;
            }
            if (IsOver) return;
            if (fatal)
            {
                EndFatal(c.Rank, message, kind);
                return;
            }
            if (kind == FailureClass.PeerLost)
            {
                g.PeerLost ??= new LostPeer(c.Rank, message, clock.Elapsed);
                g.PeerLostReporters.Add(c.Rank);
                return;
            }
            generation = g.Number;
        }
        FailGeneration(generation, $"rank {c.Rank} failed: {message}");
    }

    // Caller holds the lock. A failure no restart cures: the job fails, the rank and its cause first.
    void EndFatal(int rank, string message, FailureClass kind) =>
        End(new JobOutcome(JobPhase.Failed, $"rank {rank}: {message} ({(kind == FailureClass.Resource ? "out of a resource" : "bad configuration or data")}: " +
            "not restarted, another try would fail the same way)", current.StepsDone, double.NaN, null));

    /// <summary>The message reported under `key` in the caller's generation, or null.</summary>
    public string? ReadFailure(Caller c, string key)
    {
        lock (gate) return Member(c).Failures.GetValueOrDefault(key);
    }
}
