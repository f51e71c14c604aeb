// JobState directly: how the job ends once every rank finished, and that nothing changes it afterwards.
using Job;
using Coordinator.Protocol;

namespace Coordinator.UnitTests;

public sealed class FinishTests
{
    [Fact]
    public async Task Both_ranks_finishing_is_success()
    {
        using var job = new TestJob();
        await job.RegisterAll();

        job.Finish(1, 0, TestJob.Steps, 2.5);
        Assert.False(job.State.Outcome.IsCompleted);
        job.Finish(1, 1, TestJob.Steps, 2.5);

        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Succeeded, outcome.Phase);
        Assert.Equal(0, outcome.ExitCode);
        Assert.Equal(TestJob.Steps, outcome.Step);
        Assert.Equal(2.5, outcome.TrainLoss);
        Assert.Null(outcome.ValLoss);
        Assert.Equal(JobPhase.Succeeded, job.State.Phase);
    }

    [Fact]
    public async Task A_NaN_training_loss_is_divergence_when_the_rules_only_warn()
    {
        using var job = new TestJob(divergence: new DivergenceOptions { Action = DivergenceAction.Warn });
        await job.RegisterAll();

        job.Finish(1, 0, 7, double.NaN);
        job.Finish(1, 1, 7, double.NaN);

        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Diverged, outcome.Phase);
        Assert.Equal(3, outcome.ExitCode);
        Assert.Equal(7, outcome.Step);
    }

    [Fact]
    public async Task A_generation_resumed_at_the_last_step_trains_nothing_and_its_missing_loss_is_success_not_divergence()
    {
        using var job = new TestJob();
        await job.RegisterAll();
        job.CommitBoth(1, TestJob.Steps); // the final checkpoint is committed, then a rank dies before it finishes
        job.ReportFailure(1, 1, "killed");
        Assert.Equal(2, job.State.Generation);
        var replies = await job.RegisterAll();
        Assert.All(replies, r => Assert.Equal(TestJob.Steps, r.StartStep));

        job.Finish(2, 0, TestJob.Steps, double.NaN); // no step run: no loss to report
        job.Finish(2, 1, TestJob.Steps, double.NaN);

        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Succeeded, outcome.Phase);
        Assert.Equal(0, job.State.DivergenceEvents);
    }

    /// <summary>A coordinator started again at the final checkpoint: finished when the model file is there; without it
    /// (the job ended between the last checkpoint and the model's write) a generation runs to write it.</summary>
    [Fact]
    public async Task A_resume_at_the_final_checkpoint_is_finished_only_once_the_model_is_written()
    {
        using var dir = new TempDir();
        using (var first = new TestJob(outDir: dir.Path))
        {
            await first.RegisterAll();
            first.CommitBoth(1, TestJob.Steps);
        }

        using (var resumed = new TestJob(new JobOptions { Resume = ResumeMode.Yes }, outDir: dir.Path))
        {
            Assert.Equal(JobPhase.Registering, resumed.State.Phase);
            Assert.All(await resumed.RegisterAll(), r => Assert.Equal(TestJob.Steps, r.StartStep));
        }

        File.WriteAllText(Path.Combine(dir.Path, "model.safetensors"), "written by that generation's rank 0");
        using var again = new TestJob(new JobOptions { Resume = ResumeMode.Yes }, outDir: dir.Path);
        Assert.Equal(JobPhase.Succeeded, (await again.State.Outcome.Within()).Phase);
    }

    [Fact]
    public async Task A_stopped_finish_is_stopped()
    {
        using var job = new TestJob();
        await job.RegisterAll();
        job.State.RequestStop("operator request");
        Assert.Equal(Command.Stop, job.Heartbeat(1, 0, 3).Command);

        job.Finish(1, 0, 4, 3.0, stopped: true);
        job.Finish(1, 1, 4, 3.0, stopped: true);

        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Stopped, outcome.Phase);
        Assert.Equal(0, outcome.ExitCode);
        Assert.Equal(4, outcome.Step);
        Assert.Contains("operator request", outcome.Reason);
        Assert.Contains("job.resume=true", outcome.Reason);
    }

    /// <summary>A pod evicted, preempted or drained: its ranks get SIGTERM, vote to stop, and every rank stops at a
    /// checkpoint that the coordinator did not ask for. The job goes on from it: each rank is told to restart, a rank
    /// back early waits for the next generation, which opens at that checkpoint once all have finished (not counted
    /// as a restart).</summary>
    [Fact]
    public async Task A_stop_on_the_ranks_own_signal_continues_the_job_from_that_checkpoint()
    {
        using var job = new TestJob(new JobOptions { MaxRestarts = 0 });
        await job.RegisterAll();
        Assert.True(job.CommitBoth(1, 4).Rank1.Committed);                             // the stop's checkpoint

        var first = job.Finish(1, 0, 4, 3.0, stopped: true);
        Assert.Equal(Command.Restart, first.Command);
        Assert.Contains("on a signal of their own", first.Reason);
        var early = job.Register(0);                                                   // rank 0's replacement, back before rank 1 finished
        await Task.Delay(200);
        Assert.False(early.IsCompleted);
        Assert.Equal(1, job.State.Generation);

        Assert.Equal(Command.Restart, job.Finish(1, 1, 4, 3.0, stopped: true).Command);
        Assert.Equal(2, job.State.Generation);
        Assert.Equal(JobPhase.Registering, job.State.Phase);
        var late = job.Register(1);
        var replies = await Task.WhenAll(early, late).Within();
        Assert.All(replies, r => Assert.Equal((2, 4L, job.State.Catalog.DirectoryFor(4)), (r.Generation, r.StartStep, r.ResumeFrom)));
        Assert.Equal(0, job.State.Restarts);
        Assert.False(job.State.Outcome.IsCompleted);

        job.Finish(2, 0, TestJob.Steps, 2.5);                                          // and it finishes as any job does
        job.Finish(2, 1, TestJob.Steps, 2.5);
        Assert.Equal(JobPhase.Succeeded, (await job.State.Outcome.Within()).Phase);
    }

    [Fact]
    public async Task Finishing_after_the_job_failed_leaves_it_failed()
    {
        using var job = new TestJob(new JobOptions { MaxRestarts = 0 });
        await job.RegisterAll();
        job.ReportFailure(1, 1, "lost the GPU");
        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Failed, outcome.Phase);

        job.Finish(1, 0, TestJob.Steps, 2.5);
        job.Finish(1, 1, TestJob.Steps, 2.5);

        Assert.Equal(JobPhase.Failed, job.State.Phase);
        Assert.Equal(Command.Abort, job.Heartbeat(1, 0).Command);
        Assert.DoesNotContain("succeeded", job.LogText());
    }
}
