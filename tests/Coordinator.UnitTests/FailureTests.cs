// JobState directly: a reported failure opens the next generation until job.max_restarts are used up, stragglers of
// an old generation are told to restart, and a silent rank fails its generation by heartbeat timeout; configuration and
// resource failures end the job at once, a lost peer waits for its cause, a generation that does not exist is refused.
using Job;
using Coordinator.Protocol;
using Grpc.Core;
using FailureClass = Coordinator.Protocol.FailureClass;

namespace Coordinator.UnitTests;

public sealed class FailureTests
{
    [Fact]
    public async Task A_failure_opens_the_next_generation_and_old_heartbeats_get_restart()
    {
        using var job = new TestJob();
        var opened = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        job.State.GenerationOpened += g => opened.TrySetResult(g);
        await job.RegisterAll();
        Assert.Equal(Command.Continue, job.Heartbeat(1, 0).Command);

        job.ReportFailure(1, 1, "CUDA error: out of memory");

        Assert.Equal(2, await opened.Task.Within());
        Assert.Equal(2, job.State.Generation);
        Assert.Equal(1, job.State.Restarts);
        Assert.Equal(JobPhase.Registering, job.State.Phase);
        Assert.False(job.State.Outcome.IsCompleted);
        var straggler = job.Heartbeat(1, 0);
        Assert.Equal(Command.Restart, straggler.Command);
        Assert.Contains("generation 2", straggler.Reason);
        Assert.Contains("generation 1 failed: rank 1 failed: CUDA error: out of memory", job.LogText());

        var replies = await job.RegisterAll();
        Assert.All(replies, r => Assert.Equal(2, r.Generation));
        Assert.NotEqual($"{TestJob.JobId}/g1", replies[0].Bootstrap.GroupKey);
        Assert.Equal(JobPhase.Running, job.State.Phase);
    }

    [Fact]
    public async Task A_failure_beyond_max_restarts_fails_the_job()
    {
        using var job = new TestJob(new JobOptions { MaxRestarts = 1 });
        await job.RegisterAll();
        job.ReportFailure(1, 1, "first failure");
        Assert.Equal(2, job.State.Generation);
        await job.RegisterAll();

        job.ReportFailure(2, 0, "second failure");

        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Failed, outcome.Phase);
        Assert.Equal(1, outcome.ExitCode);
        Assert.Contains("after 1 restarts", outcome.Reason);
        Assert.Contains("second failure", outcome.Reason);
        Assert.Equal(2, job.State.Generation);
        Assert.Equal(JobPhase.Failed, job.State.Phase);
        Assert.Equal(Command.Abort, job.Heartbeat(2, 1).Command);
    }

    [Fact]
    public async Task A_stalled_note_is_not_a_failure()
    {
        using var job = new TestJob();
        await job.RegisterAll();

        job.ReportFailure(1, 0, "rank 1 is slow", key: "test-job/g1/stalled/0");

        Assert.Equal(1, job.State.Generation);
        Assert.Equal(JobPhase.Running, job.State.Phase);
        var read = job.Service.ReadFailure(new ReadFailureRequest { JobId = TestJob.JobId, Generation = 1, Rank = 1, Key = "test-job/g1/stalled/0" }, TestJob.Peer);
        Assert.True(read.Found);
        Assert.Equal("rank 1 is slow", read.Message);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(2)]
    [InlineData(-1)]
    public async Task A_failure_of_a_generation_that_does_not_exist_is_refused_naming_it(int generation)
    {
        using var job = new TestJob();
        await job.RegisterAll();

        var e = Assert.Throws<RpcException>(() => job.ReportFailure(generation, 1, "made up"));

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains($"generation {generation}, which does not exist (the current one is 1)", e.Status.Detail);
        Assert.Equal(1, job.State.Generation);
        Assert.Equal(JobPhase.Running, job.State.Phase);
    }

    [Theory]
    [InlineData(FailureClass.Configuration, "model.d_model = 1000000000: needs 8 EiB", "bad configuration or data")]
    [InlineData(FailureClass.Resource, "No space left on device : '/run/checkpoints/step_000010/rank1.pt'", "out of a resource")]
    public async Task A_configuration_or_resource_failure_ends_the_job_at_once_naming_the_rank_and_cause_first(FailureClass kind, string message, string what)
    {
        using var job = new TestJob(new JobOptions { MaxRestarts = 3 });
        await job.RegisterAll();

        job.ReportFailure(1, 1, message, failureClass: kind);

        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Failed, outcome.Phase);
        Assert.StartsWith($"rank 1: {message} ({what}: not restarted", outcome.Reason);
        Assert.Equal(0, job.State.Restarts);
        Assert.Equal(1, job.State.Generation);
        Assert.Equal(Command.Abort, job.Heartbeat(1, 0).Command);
    }

    [Fact]
    public async Task A_full_disk_reported_after_a_peer_lost_its_connection_is_the_reason_and_nothing_restarts()
    {
        using var job = new TestJob(new JobOptions { MaxRestarts = 3 });
        await job.RegisterAll();

        job.ReportFailure(1, 0, "rank 1 (127.0.0.1:4000) failed: rank 1 closed the connection; seen by rank 0 during AllReduce", key: "test-job/g1",
            failureClass: FailureClass.PeerLost);
        job.ReportFailure(1, 1, "No space left on device : '/run/checkpoints/step_000010/rank1.pt'", failureClass: FailureClass.Resource);

        var outcome = await job.State.Outcome.Within();
        Assert.StartsWith("rank 1: No space left on device", outcome.Reason);
        Assert.Equal(0, job.State.Restarts);
    }

    [Fact]
    public async Task A_killed_rank_is_named_though_its_surviving_peer_reported_first()
    {
        using var job = new TestJob(new JobOptions { MaxRestarts = 3 });
        var opened = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        job.State.GenerationOpened += g => opened.TrySetResult(g);
        await job.RegisterAll();

        job.ReportFailure(1, 0, "rank 1 (127.0.0.1:4000) failed: rank 1 closed the connection; seen by rank 0 during AllReduce", key: "test-job/g1");
        job.State.FailGeneration(1, "rank 1 (pid 4242) exited with code 137 (killed by signal 9)");

        Assert.Equal(2, await opened.Task.Within());
        Assert.Contains("generation 1 failed: rank 1 (pid 4242) exited with code 137", job.LogText());
        Assert.DoesNotContain("rank 0 failed", job.LogText());
    }

    [Fact]
    public async Task A_lost_peer_with_no_other_sign_fails_the_generation_after_the_grace_naming_the_silent_rank_first()
    {
        using var job = new TestJob(new JobOptions { HeartbeatIntervalS = 0.1, HeartbeatTimeoutS = 30, MaxRestarts = 1 });
        var opened = new TaskCompletionSource<int>(TaskCreationOptions.RunContinuationsAsynchronously);
        job.State.GenerationOpened += g => opened.TrySetResult(g);
        await job.RegisterAll();
        using var stop = new CancellationTokenSource();
        var beating = BeatUntil(stop.Token, () => job.Heartbeat(1, 0, step: 1)); // rank 1 is gone: it never beats again

        job.ReportFailure(1, 0, "rank 0 lost rank 1: connection reset", failureClass: FailureClass.PeerLost);
        job.State.RankExited(1, 0, ExitCodes.Failed, "rank 0 (pid 7) exited with code 1");

        Assert.Equal(2, await opened.Task.Within());
        await stop.CancelAsync();
        await beating.Within();
        string failed = job.LogText().Split('\n').Single(l => l.Contains("generation 1 failed"));
        Assert.Matches(@"generation 1 failed: rank 1 \(.* pid \d+\) vanished: no heartbeat for [\d.]+ s; rank 0 lost rank 1: connection reset \(reported by rank 0\)", failed);
    }

    /// <summary>Runs <paramref name="beat"/> every 50 ms on a thread of its own until <paramref name="stop"/>.</summary>
    static Task BeatUntil(CancellationToken stop, Action beat) => Task.Factory.StartNew(() =>
    {
        while (!stop.IsCancellationRequested)
        {
            beat();
            Thread.Sleep(50);
        }
    }, TaskCreationOptions.LongRunning);

    [Fact]
    public async Task A_rank_that_stops_heartbeating_fails_the_generation()
    {
        using var job = new TestJob(new JobOptions { HeartbeatIntervalS = 0.1, HeartbeatTimeoutS = 0.5, MaxRestarts = 0 });
        await job.RegisterAll();
        bool rank1Beats = true;
        using var stop = new CancellationTokenSource();
        var beating = BeatUntil(stop.Token, () =>
        {
            job.Heartbeat(1, 0, step: 1);
            if (Volatile.Read(ref rank1Beats)) job.Heartbeat(1, 1, step: 1);
        });

        // While both ranks beat, twice the timeout passes without a failure.
        await Task.Delay(TimeSpan.FromSeconds(1));
        Assert.Equal(JobPhase.Running, job.State.Phase);
        Assert.False(job.State.Outcome.IsCompleted);

        Volatile.Write(ref rank1Beats, false);
        var outcome = await job.State.Outcome.Within();
        await stop.CancelAsync();
        await beating.Within();

        Assert.Equal(JobPhase.Failed, outcome.Phase);
        Assert.Contains("rank 1 (", outcome.Reason);
        Assert.Contains("heartbeat", outcome.Reason);
        Assert.DoesNotContain("rank 0", outcome.Reason);
    }

    /// <summary>Ranks that beat but finish no step (a collective that waits forever: NCCL's have no timeout of their own)
    /// fail their generation after job.step_timeout_s; ranks that advance do not, however long the job runs.</summary>
    [Fact]
    public async Task Ranks_that_beat_but_finish_no_step_fail_the_generation_after_the_step_timeout()
    {
        using var job = new TestJob(new JobOptions { HeartbeatIntervalS = 0.1, HeartbeatTimeoutS = 5, StepTimeoutS = 1.5, MaxRestarts = 0 });
        await job.RegisterAll();
        long step = 0;
        using var stop = new CancellationTokenSource();
        var beating = BeatUntil(stop.Token, () =>
        {
            long now = Volatile.Read(ref step);
            job.Heartbeat(1, 0, step: now);
            job.Heartbeat(1, 1, step: now);
        });

        // A step every 0.4 s for 3.2 s, over twice the timeout: no failure. (A gap under a third of the timeout holds on a
        // loaded 2-core machine; 0.2 s gaps against a 0.5 s timeout did not.) The test job has 10 steps.
        for (int i = 1; i <= 8; i++)
        {
            await Task.Delay(TimeSpan.FromSeconds(0.4));
            Volatile.Write(ref step, i);
        }
        Assert.Equal(JobPhase.Running, job.State.Phase);
        Assert.False(job.State.Outcome.IsCompleted);

        var outcome = await job.State.Outcome.Within(); // the steps stop at 8; the heartbeats go on
        await stop.CancelAsync();
        await beating.Within();

        Assert.Equal(JobPhase.Failed, outcome.Phase);
        Assert.Contains("no rank finished a step for", outcome.Reason);
        Assert.Contains("job.step_timeout_s = 1.5", outcome.Reason);
        Assert.Contains("ranks at steps [8, 8]", outcome.Reason);
    }
}
