// The job's generations: ranks finishing, divergence rollbacks, failures and restarts, stop requests, the watchdog.
using Job;

namespace Coordinator;

public sealed partial class JobState
{
    /// <summary>A rank's last word; once every rank's is in, the job ends. A non-finite loss is judged first.</summary>
    public RankOrder Finish(Caller c, FinishReport report)
    {
        RankOrder order;
        Reopened? rolledBack;
        lock (gate) order = Finished(c, report, out rolledBack);
        Announce(rolledBack);
        return order;
    }

    // Caller holds the lock.
    RankOrder Finished(Caller c, FinishReport r, out Reopened? rolledBack)
    {
        rolledBack = null;
        CheckJob(c.JobId, c.Peer);
        if (c.Generation < current.Number && !IsOver)
        {
            // A rollback (or a failure) ended this rank's generation while it ran its last step: the next one needs it.
            log.Info($"(after generation {c.Generation}) rank {c.Rank} finished at step {r.Step}; told to restart");
            return Replaced(c.Generation);
        }
        var g = Member(c);
        if (IsOver)
        {
            // The job has already ended (e.g. failed while this rank ran its last step): that outcome stands.
            log.Info($"(after the job ended {phase.ToString().ToLowerInvariant()}) rank {c.Rank} finished at step {r.Step}");
            return RankOrder.Continue;
        }
        // Every rank reports the global loss; the first non-finite one is judged (its heartbeat may not have got through).
        // A generation that resumed at the last step (a rank died after the final checkpoint) trained nothing: no loss.
        if (!r.Stopped && r.Step > g.StartStep && !double.IsFinite(r.TrainLoss) && Judge(StepMetrics.LossOnly(r.Step, r.TrainLoss)) is { } back)
        {
            rolledBack = back;
            return new RankOrder(OrderKind.Restart, $"rolled back to step {back.Step}: generation {back.Generation} replaces generation {c.Generation}");
        }
        if (IsOver) return RankOrder.Continue; // divergence.action = stop ended the job
        var slot = g.Slots[c.Rank]!;
        slot.Finish = r;
        slot.Step = r.Step;
        if (r.Stopped && stopReason is null && r.Step < spec.Steps)
        {
            // The ranks stopped at a checkpoint that the coordinator did not ask for: a rank's own SIGTERM or SIGINT (its
            // pod evicted or preempted, its node drained, its Job suspended by a queue), passed to all as the stop vote.
            // The job goes on from that checkpoint: every rank exits to be started again, and once all have finished
            // (their parts of the checkpoint committed) the next generation opens there. Not a failure: not counted
            // against job.max_restarts, as Kubernetes does not count a disrupted pod.
            g.NextAfterOwnStop ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            if (g.Slots.All(s => s!.Finish is not null)) rolledBack = ContinueAfterOwnStop(g, r.Step);
            return new RankOrder(OrderKind.Restart, $"the ranks stopped at step {r.Step} on a signal of their own (a pod evicted, preempted or " +
                                                    "suspended, a node drained), not on the coordinator's request: the job continues from that checkpoint");
        }
        if (g.Slots.All(s => s!.Finish is not null)) EndFinished(g);
        return RankOrder.Continue;
    }

    // Caller holds the lock. Every rank of `g` stopped at `step` on its own signal: the next generation resumes there.
    Reopened ContinueAfterOwnStop(Attempt g, long step)
    {
        var latest = catalog.LatestValid();
        Open(latest?.Manifest.Step ?? 0, latest?.Directory);
        log.Info($"generation {g.Number} stopped at step {step} on its ranks' own signal; generation {current.Number} resumes from " +
                 (latest is null ? "the start (no checkpoint committed)" : $"checkpoint step {current.StartStep} ({latest.Value.Directory})"));
        monitor.Truncate(current.StartStep);
        return new Reopened(current.StartStep, current.Number);
    }

    // Caller holds the lock. Every rank of `g` finished: the job ends as rank 0's last word says.
    void EndFinished(Attempt g)
    {
        var last = g.Slots[0]!.Finish!;
        var (end, reason) = g.Slots.Any(s => s!.Finish!.Stopped) ? (JobPhase.Stopped, $"stopped at step {last.Step} ({stopReason}); continue it with job.resume=true")
            : !double.IsFinite(last.TrainLoss) && last.Step > g.StartStep ? (JobPhase.Diverged, $"diverged: training loss {last.TrainLoss} at step {last.Step}")
            : (JobPhase.Succeeded, $"finished {last.Step} steps");
        End(new JobOutcome(end, reason, last.Step, last.TrainLoss, last.ValLoss));
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
    Reopened? Judge(StepMetrics m)
    {
        if (monitor.Check(m) is not { } fired) return null;
        divergenceEvents++;
        var o = spec.Divergence;
        log.Info($"generation {current.Number}: {fired}");
        if (o.Action == DivergenceAction.Warn)
        {
            monitor.Record(m);
            log.Info("divergence.action = warn: training goes on");
            return null;
        }
        // Back to the newest checkpoint at or before the last step that passed every rule; later ones saw the trouble.
        long healthy = HealthyStep;
        var back = catalog.LatestValid(atMost: healthy);
        long to = back?.Manifest.Step ?? 0;
        catalog.SetAside(to, current.Number);
        string where = back is null ? "the start (no checkpoint before the trouble)" : $"checkpoint step {to} ({back.Value.Directory})";
        // What an operator can do next: continue from the healthy checkpoint, or, with none, start again elsewhere.
        string next = back is null
            ? "there is no checkpoint before the trouble to continue from: start afresh in another run.out_dir (e.g. with a lower learning rate or an oec.method)"
            : $"job.resume=true continues from {where}";
        if (o.Action == DivergenceAction.Stop || stopReason is not null)
        {
            string why = o.Action == DivergenceAction.Stop ? "divergence.action = stop" : $"the job was stopping ({stopReason})";
            End(new JobOutcome(JobPhase.Diverged, $"{fired}; {why}, so the job stops. The last healthy step was {healthy}; " +
                next, m.Step, m.TrainLoss, null));
            return null;
        }
        if (rollbacks >= o.MaxRollbacks)
        {
            End(new JobOutcome(JobPhase.Diverged, $"{fired}; gave up after {rollbacks} rollbacks (divergence.max_rollbacks = {o.MaxRollbacks}). " +
                next, m.Step, m.TrainLoss, null));
            return null;
        }
        return RollBack(fired, m.Step, to, back, where);
    }

    // Caller holds the lock. Rollback number rollbacks + 1: from trouble at `step` to the checkpoint at `to` (or the start).
    Reopened RollBack(DivergenceEvent fired, long step, long to, (CheckpointManifest Manifest, string Directory)? back, string where)
    {
        var o = spec.Divergence;
        rollbacks++;
        var (first, next) = schedule.Skip(to, step);
        long skipped = (step - to) * spec.Train.BatchSize; // the batches the rolled-back steps read; earlier skips were counted then
        skippedSequences += skipped;
        learningRateScale *= o.LearningRateFactor;
        monitor.Truncate(to);
        healthyFloor = to;
        // The target's manifest records the rollback now, not the next checkpoint's: a coordinator started again before
        // then (a pod moved) resumes from it with the same skips, rate and count.
        if (back is { Manifest: var target })
            try { catalog.Rewrite(WithRollbacks(target)); }
            catch (IOException e) { log.Info($"rollback {rollbacks}: not recorded in {back.Value.Directory} ({e.Message}); the next checkpoint records it"); }
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
        var ended = current;
        current = new Attempt(current.Number + 1, World, step, from, clock.Elapsed);
        ended.NextAfterOwnStop?.TrySetResult(); // registrations waiting for it join this one
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

    /// <summary>How long a lost peer's report waits for its cause (another rank's report, its exit, its silence): two
    /// heartbeats, at least 2 s.</summary>
    TimeSpan PeerLostGrace => TimeSpan.FromSeconds(Math.Max(2, 2 * spec.Options.HeartbeatIntervalS));

    /// <summary>Rank <paramref name="rank"/>'s process of <paramref name="generation"/> exited with <paramref name="code"/>
    /// (not 0), as its launcher saw. A rank that reported a lost peer exits 1 because of it: that exit waits with the
    /// report; any other exit fails the generation with <paramref name="reason"/>.</summary>
    public void RankExited(int generation, int rank, int code, string reason)
    {
        lock (gate)
        {
            if (code is ExitCodes.Failed or ExitCodes.Restart && generation == current.Number && current.PeerLostReporters.Contains(rank))
            {
                log.Info($"generation {generation}: {reason}, after it reported a lost peer");
                return;
            }
            if (code == ExitCodes.Restart && generation == current.Number && current.NextAfterOwnStop is not null && current.Slots[rank]?.Finish is not null)
            {
                log.Info($"generation {generation}: {reason}, after it stopped on its own signal and was told to restart");
                return;
            }
        }
        FailGeneration(generation, reason);
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

    // Every 250 ms: fails a generation whose rendezvous timed out, whose rank went silent, or that hung.
    void Watch()
    {
        int? failing = null;
        string reason = "";
        lock (gate)
        {
            var now = clock.Elapsed;
            var g = current;
            // The first rank may take job.startup_timeout_s (a queue, image pulls); the rest job.rendezvous_timeout_s after it.
            if (phase == JobPhase.Registering && g.FirstArrival is null && (now - g.Opened).TotalSeconds > spec.Options.FirstRankTimeoutS)
                (failing, reason) = (g.Number, $"no rank registered within {spec.Options.FirstRankTimeoutS:0.#} s of generation {g.Number}'s start " +
                                               "(job.startup_timeout_s, else job.rendezvous_timeout_s): were the rank pods or processes started?");
            else if (phase == JobPhase.Registering && g.FirstArrival is { } first && (now - first).TotalSeconds > spec.Options.RendezvousTimeoutS)
            {
                var missing = Enumerable.Range(0, World).Where(r => g.Slots[r] is null);
                (failing, reason) = (g.Number, $"rendezvous timed out {spec.Options.RendezvousTimeoutS:0.#} s after the first rank registered: ranks [{string.Join(", ", missing)}] of {World} never registered");
            }
            else if (phase == JobPhase.Running && g.PeerLost is { } lost && now - lost.At > PeerLostGrace)
                (failing, reason) = (g.Number, LostPeerReason(g, lost, now));
            else if (phase == JobPhase.Running && Stuck(g, now) is { } why)
                (failing, reason) = (g.Number, why);
        }
        if (failing is int n) FailGeneration(n, reason);
    }

    // Caller holds the lock. A lost peer whose cause did not show itself in time: ranks silent for more than 1.5
    // heartbeats first (they vanished), then what the first rank that lost its peer said.
    string LostPeerReason(Attempt g, LostPeer lost, TimeSpan now)
    {
        double interval = spec.Options.HeartbeatIntervalS;
        var vanished = g.Slots.Select((s, r) => (Slot: s!, Rank: r, Silent: (now - s!.LastBeat).TotalSeconds))
            .Where(x => x.Slot.Finish is null && !g.PeerLostReporters.Contains(x.Rank) && x.Silent > 1.5 * interval)
            .Select(x => $"rank {x.Rank} ({x.Slot.Host} pid {x.Slot.Pid}) vanished: no heartbeat for {x.Silent:0.0} s; ");
        return $"{string.Concat(vanished)}{lost.Message} (reported by rank {lost.Rank})";
    }

    // Caller holds the lock. Why the running generation `g` has failed by now: a silent rank, or no step for too long.
    string? Stuck(Attempt g, TimeSpan now)
    {
        foreach (var (s, r) in g.Slots.Select((s, r) => (s!, r)))
        {
            double silent = (now - s.LastBeat).TotalSeconds;
            if (s.Finish is null && silent > spec.Options.HeartbeatTimeoutS)
                return $"rank {r} ({s.Host} pid {s.Pid}) sent no heartbeat for {silent:0.0} s (job.heartbeat_timeout_s = {spec.Options.HeartbeatTimeoutS})";
        }
        double still = (now - g.LastProgress).TotalSeconds;
        if (spec.Options.StepTimeoutS > 0 && still > spec.Options.StepTimeoutS && g.Slots.All(s => s!.Finish is null && s.Step < spec.Steps))
            return $"no rank finished a step for {still:0} s (job.step_timeout_s = {spec.Options.StepTimeoutS}), though all beat: " +
                   $"hung in a collective? ranks at steps [{string.Join(", ", g.Slots.Select(s => s!.Step))}]";
        return null;
    }
}
