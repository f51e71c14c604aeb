// Divergence rules, the data schedule, and what the coordinator does when a rule fires: roll back, stop, or warn.
using Job;
using Coordinator.Protocol;

namespace Coordinator.UnitTests;

public class DivergenceMonitorTests
{
    static DivergenceOptions Rules(Func<DivergenceOptions, DivergenceOptions>? change = null) =>
        (change ?? (o => o))(new DivergenceOptions { LossWindow = 3 });

    /// <summary>A logged step with the metrics the rules read; the others fixed.</summary>
    static Job.StepMetrics Point(long step, double loss, double maxAbsLogit, double muNorm) =>
        new((int)step, loss, null, 1e-3, 1, 1e4, 0.01, muNorm, 0, 1, maxAbsLogit, 1, 0.5);

    [Fact]
    public void A_non_finite_loss_fires_at_once_and_joins_no_history()
    {
        var monitor = new DivergenceMonitor(Rules());
        Assert.Null(monitor.Check(Point(5, 4.0, 10, 1)));

        var fired = monitor.Check(Point(10, double.NaN, double.NaN, double.NaN));

        Assert.Equal(("non_finite", 10L), (fired?.Rule, fired?.Step));
        Assert.Equal(5, monitor.LastHealthyStep);
        Assert.Equal("non_finite", monitor.Check(Point(15, double.PositiveInfinity, 1, 1))?.Rule);
    }

    [Fact]
    public void A_loss_spike_fires_against_the_mean_of_the_window_and_only_once_the_window_is_full()
    {
        var monitor = new DivergenceMonitor(Rules());
        Assert.Null(monitor.Check(Point(1, 6.0, 1, 1)));
        Assert.Null(monitor.Check(Point(2, 13.0, 1, 1))); // 13 > 2 x 6, but the window of 3 is not full yet
        Assert.Null(monitor.Check(Point(3, 5.0, 1, 1)));
        Assert.Null(monitor.Check(Point(4, 16.0, 1, 1))); // mean of 6, 13, 5 is 8: 16 is not above 2 x 8

        var fired = monitor.Check(Point(5, 22.0, 1, 1));   // mean of 13, 5, 16 is 34/3: 22 < 22.67, healthy
        Assert.Null(fired);
        fired = monitor.Check(Point(6, 29.0, 1, 1));       // mean of 5, 16, 22 is 43/3: 29 > 28.67
        Assert.Equal("loss_spike_factor", fired?.Rule);
        Assert.Contains("train_loss 29 > 2 x 14.3333", fired!.Values);
        Assert.Contains("logged steps 3..5", fired.Values);
    }

    [Fact]
    public void A_loss_far_above_the_untrained_loss_fires_even_when_the_spike_rule_has_only_diverged_steps_to_compare_with()
    {
        double lnV = Math.Log(512);
        // issue 17's run at learning rate 30 without OEC: 807 at the first logged step, then a window of diverged losses
        var monitor = new DivergenceMonitor(Rules(o => o with { LossAboveUntrained = 0 }), lnV);
        foreach (var (step, loss) in new[] { (10, 807.0), (20, 32_691.0), (30, 20_000.0), (40, 30_000.0), (50, 304.0) })
            Assert.Null(monitor.Check(Point(step, loss, 1, 1))); // the spike rule alone lets every one of them pass

        var rules = new DivergenceMonitor(Rules(), lnV); // the default: 1 nat above ln V
        var fired = rules.Check(Point(10, 807, 1, 1));
        Assert.Equal(("loss_above_untrained", 10L), (fired?.Rule, fired?.Step));
        Assert.Contains("train_loss 807 > 7.23832: the untrained loss ln V = 6.23832 plus divergence.loss_above_untrained = 1", fired!.Values);

        // an untrained model starts within a fraction of a nat of ln V: no alarm; without ln V the rule is off
        Assert.Null(rules.Check(Point(20, lnV + 0.5, 1, 1)));
        Assert.Null(new DivergenceMonitor(Rules()).Check(Point(10, 807, 1, 1)));
    }

    [Fact]
    public void Limits_fire_above_their_value_and_NaN_statistics_break_no_rule()
    {
        var monitor = new DivergenceMonitor(Rules(o => o with { MaxAbsLogitLimit = 100, MuNormLimit = 5 }));
        Assert.Null(monitor.Check(Point(1, 3, 100, 5)));
        Assert.Null(monitor.Check(Point(2, 3, double.NaN, double.NaN)));
        Assert.Equal("max_abs_logit_limit", monitor.Check(Point(3, 3, 100.5, 1))?.Rule);
        Assert.Equal("mu_norm_limit", monitor.Check(Point(3, 3, 1, 5.5))?.Rule);
    }

    [Fact]
    public void A_rate_rule_measures_growth_per_step_from_the_oldest_logged_step_in_its_window()
    {
        var monitor = new DivergenceMonitor(Rules(o => o with { MaxAbsLogitRate = 0.5, RateWindowSteps = 20 }));
        Assert.Null(monitor.Check(Point(10, 3, 10, 1)));
        Assert.Null(monitor.Check(Point(20, 3, 14, 1)));   // 0.4 per step
        Assert.Null(monitor.Check(Point(30, 3, 19, 1)));   // from step 10 (in the window of 20): 9 / 20 = 0.45

        var fired = monitor.Check(Point(40, 3, 26, 1));    // from step 20: 12 / 20 = 0.6
        Assert.Equal("max_abs_logit_rate", fired?.Rule);
        Assert.Contains("from 14 at step 20 to 26: 0.6 per step", fired!.Values);
    }

    [Fact]
    public void Truncate_forgets_later_steps_so_that_they_are_judged_again()
    {
        var monitor = new DivergenceMonitor(Rules(o => o with { MaxAbsLogitLimit = 50 }));
        foreach (long s in new long[] { 5, 10, 15 }) Assert.Null(monitor.Check(Point(s, 3, 10, 1)));
        Assert.Null(monitor.Check(Point(10, 3, 99, 1))); // judged before: ignored

        monitor.Truncate(5);

        Assert.Equal(5, monitor.LastHealthyStep);
        Assert.Equal("max_abs_logit_limit", monitor.Check(Point(10, 3, 99, 1))?.Rule);
    }

    [Theory]
    [InlineData("divergence.loss_spike_factor = 1", "loss_spike_factor", 1.0)]
    [InlineData("divergence.learning_rate_factor = 0", "learning_rate_factor", 0.0)]
    [InlineData("divergence.max_abs_logit_limit = -1", "max_abs_logit_limit", -1.0)]
    public void Impossible_settings_are_refused_naming_the_key_and_value(string message, string key, double value)
    {
        var options = key switch
        {
            "loss_spike_factor" => new DivergenceOptions { LossSpikeFactor = value },
            "learning_rate_factor" => new DivergenceOptions { LearningRateFactor = value },
            _ => new DivergenceOptions { MaxAbsLogitLimit = value },
        };
        var e = Assert.Throws<ArgumentException>(options.Validate);
        Assert.StartsWith(message, e.Message);
    }
}

public class DataScheduleTests
{
    [Fact]
    public void Without_skips_every_step_reads_its_own_batch()
    {
        var schedule = new DataSchedule();
        Assert.Equal([0L, 1, 2, 7], new long[] { 0, 1, 2, 7 }.Select(schedule.DataStep));
    }

    [Fact]
    public void A_rollback_skips_the_batches_of_the_rolled_back_steps_and_keeps_the_earlier_ones()
    {
        var schedule = new DataSchedule();

        var (first, next) = schedule.Skip(to: 4, at: 7); // steps 4, 5, 6 (0-based) read batches 4, 5, 6

        Assert.Equal((4L, 7L), (first, next));
        Assert.Equal([0L, 1, 2, 3, 7, 8], new long[] { 0, 1, 2, 3, 4, 5 }.Select(schedule.DataStep));
    }

    [Fact]
    public void A_second_rollback_behind_the_first_continues_after_the_last_batch_read()
    {
        var schedule = new DataSchedule();
        schedule.Skip(to: 4, at: 7);                      // step 4 reads batch 7, step 8 batch 11
        var (first, next) = schedule.Skip(to: 2, at: 9); // step 8 (0-based) read batch 11

        Assert.Equal((2L, 12L), (first, next));
        Assert.Equal([0L, 1, 12, 13], new long[] { 0, 1, 2, 3 }.Select(schedule.DataStep));
        Assert.Single(schedule.Skips);
    }

    [Fact]
    public void Skips_survive_a_round_trip_through_their_records()
    {
        var schedule = new DataSchedule();
        schedule.Skip(to: 3, at: 5);
        var again = new DataSchedule(schedule.Skips);
        Assert.Equal(Enumerable.Range(0, 10).Select(s => schedule.DataStep(s)), Enumerable.Range(0, 10).Select(s => again.DataStep(s)));
    }
}

/// <summary>JobState's actions on a fired rule, driven as ranks would drive it. TestJob: 2 ranks, 10 steps, 8 sequences a step.</summary>
[Collection("metrics")] // JobState counters are read by the meter of any coordinator in the process
public class DivergenceActionTests
{
    static readonly DivergenceOptions Spike = new() { LossWindow = 2, MaxAbsLogitLimit = 100 };

    /// <summary>Steps 1..6 healthy, checkpoints 4 and 8 committed (ranks run ahead of their reports), then step 7 reports
    /// max |logit| 500: the last healthy step is 6, so the job goes back to checkpoint 4.</summary>
    static void Diverge(TestJob job)
    {
        Assert.Equal(Command.Continue, job.Report(1, 0, (1, 6.0, 5), (2, 5.0, 5), (3, 4.5, 6)).Command);
        Assert.True(job.CommitBoth(1, 4).Rank1.Committed);
        Assert.Equal(Command.Continue, job.Report(1, 0, (4, 4.0, 6), (5, 3.9, 7), (6, 3.8, 8)).Command);
        Assert.True(job.CommitBoth(1, 8).Rank1.Committed);
        Assert.Equal(Command.Continue, job.Report(1, 1, (7, 3.8, 500)).Command); // rank 1's statistics are not judged
    }

    [Fact]
    public async Task A_rollback_resumes_from_the_checkpoint_before_the_trouble_with_the_data_skipped_and_a_lower_learning_rate()
    {
        using var job = new TestJob(divergence: Spike);
        await job.RegisterAll();
        Diverge(job);
        var plan = TestJob.NewBatchPlan();
        long rewound = -1;
        job.State.Rewound += s => rewound = s;

        var reply = job.Report(1, 0, (7, 3.7, 500), (8, 3.6, 9));

        Assert.Equal(Command.Restart, reply.Command);
        Assert.Equal(4, rewound);
        Assert.Equal(2, job.State.Generation);
        Assert.Equal((1, 1, 0), (job.State.DivergenceEvents, job.State.Rollbacks, job.State.Restarts));
        Assert.Equal(3 * 8, job.State.SkippedSequences); // steps 5..7 rolled back, 8 sequences each
        string log = job.LogText();
        Assert.Contains("divergence rule max_abs_logit_limit fired at step 7: max_abs_logit 500 > 100", log);
        Assert.Contains("rollback 1 of 3: generation 2 resumes from checkpoint step 4", log);
        Assert.Contains("the data of steps 5..7 is skipped (24 sequences: from step 5 on the job reads global batch 7 onwards instead of 4)", log);
        Assert.Contains("learning rate x 0.5", log);
        // The checkpoint at step 8 saw the trouble: set aside, never resumed from.
        Assert.Equal(4, job.State.Catalog.LatestValid()?.Manifest.Step);
        Assert.True(Directory.Exists(Path.Combine(job.State.Catalog.Root, "rolled-back", "step_00000008.g1")));
        Assert.Equal(Command.Restart, job.Report(1, 1, (8, 3.6, 9)).Command);

        var next = await job.RegisterAll();
        Assert.All(next, r => Assert.Equal((2, 4L, 0.5), (r.Generation, r.StartStep, r.LearningRateScale)));
        Assert.EndsWith("step_00000004", next[0].ResumeFrom);
        // Step 4 (0-based) now reads global batch 7; steps before 4 would read what they read before.
        var batches = job.Batches(2, 1, 4, 2);
        Assert.Equal(plan.RankRows(7, 1, 2, TestJob.MicroBatches), batches.Steps[0].Sequences);
        Assert.Equal(plan.RankRows(8, 1, 2, TestJob.MicroBatches), batches.Steps[1].Sequences);
        // The rules start again from step 4's history: a healthy step 5 is judged, not ignored as seen.
        Assert.Equal(Command.Continue, job.Report(2, 0, (5, 3.9, 7)).Command);
        Assert.Equal(1, job.State.DivergenceEvents);

        // A checkpoint after the rollback records the schedule, the cursor is the batch it will read next.
        job.CommitBoth(2, 6);
        var manifest = job.State.Catalog.LatestValid()!.Value.Manifest;
        Assert.Equal(new DataSkip(4, 3), Assert.Single(manifest.DataSkips!));
        Assert.Equal(0.5, manifest.LearningRateScale);
        Assert.Equal(plan.CursorAt(9), (manifest.Epoch, manifest.Position));
    }

    [Fact]
    public async Task A_resumed_job_keeps_the_skipped_data_and_the_lowered_learning_rate_of_its_checkpoint()
    {
        using var dir = new TempDir();
        using (var first = new TestJob(outDir: dir.Path, divergence: Spike))
        {
            await first.RegisterAll();
            Diverge(first);
            first.Report(1, 0, (7, 3.7, 500));
            await first.RegisterAll();
            first.CommitBoth(2, 6);
        }

        using var resumed = new TestJob(new JobOptions { Resume = ResumeMode.Yes }, outDir: dir.Path, divergence: Spike);
        var replies = await resumed.RegisterAll();

        Assert.All(replies, r => Assert.Equal((6L, 0.5), (r.StartStep, r.LearningRateScale)));
        Assert.Equal(TestJob.NewBatchPlan().RankRows(9, 0, 2, TestJob.MicroBatches), resumed.Batches(1, 0, 6, 1).Steps[0].Sequences);
    }

    [Fact]
    public async Task With_action_stop_the_job_ends_diverged_naming_the_rule_and_the_checkpoint_to_resume_from()
    {
        using var job = new TestJob(divergence: Spike with { Action = DivergenceAction.Stop });
        await job.RegisterAll();
        Diverge(job);

        var reply = job.Report(1, 0, (7, 3.7, 500));

        Assert.Equal(Command.Abort, reply.Command);
        var outcome = await job.State.Outcome.Within();
        Assert.Equal((JobPhase.Diverged, 3), (outcome.Phase, outcome.ExitCode));
        Assert.Contains("divergence rule max_abs_logit_limit fired at step 7: max_abs_logit 500 > 100; divergence.action = stop", outcome.Reason);
        Assert.Contains("job.resume=true continues from checkpoint step 4", outcome.Reason);
        Assert.Equal(4, job.State.Catalog.LatestValid()?.Manifest.Step);
        Assert.Equal(Command.Abort, job.Report(1, 1, (8, 3.6, 9)).Command);
    }

    [Fact]
    public async Task A_rule_that_fires_while_the_job_is_stopping_ends_it_instead_of_rolling_back()
    {
        using var job = new TestJob(divergence: Spike);
        await job.RegisterAll();
        Diverge(job);
        job.State.RequestStop("interrupted");

        job.Report(1, 0, (7, 3.7, 500));

        var outcome = await job.State.Outcome.Within();
        Assert.Equal((JobPhase.Diverged, 0, 1), (outcome.Phase, job.State.Rollbacks, job.State.Generation));
        Assert.Contains("the job was stopping (interrupted), so the job stops", outcome.Reason);
    }

    [Fact]
    public async Task With_no_rollback_left_the_job_ends_diverged()
    {
        using var job = new TestJob(divergence: Spike with { MaxRollbacks = 0 });
        await job.RegisterAll();
        Diverge(job);

        job.Report(1, 0, (7, 3.7, 500));

        var outcome = await job.State.Outcome.Within();
        Assert.Equal(JobPhase.Diverged, outcome.Phase);
        Assert.Contains("gave up after 0 rollbacks (divergence.max_rollbacks = 0)", outcome.Reason);
    }

    [Fact]
    public async Task With_action_warn_the_rule_is_counted_and_training_goes_on()
    {
        using var job = new TestJob(divergence: Spike with { Action = DivergenceAction.Warn });
        await job.RegisterAll();
        Diverge(job);

        Assert.Equal(Command.Continue, job.Report(1, 0, (7, 3.7, 500), (8, 3.6, 600)).Command);

        Assert.Equal((2, 0, 1), (job.State.DivergenceEvents, job.State.Rollbacks, job.State.Generation));
        Assert.Contains("divergence.action = warn", job.LogText());
    }

    [Fact]
    public async Task A_non_finite_loss_at_finish_rolls_back_and_both_ranks_are_told_to_restart()
    {
        using var job = new TestJob(divergence: Spike);
        await job.RegisterAll();
        job.Report(1, 0, (1, 6.0, 5), (2, 5.0, 5));
        job.CommitBoth(1, 2);

        var first = job.Finish(1, 1, 3, double.NaN);   // either rank may finish first: the loss is the global one
        var second = job.Finish(1, 0, 3, double.NaN);

        Assert.Equal((Command.Restart, Command.Restart), (first.Command, second.Command));
        Assert.Equal((2, 1), (job.State.Generation, job.State.Rollbacks));
        Assert.Contains("divergence rule non_finite fired at step 3: train_loss NaN", job.LogText());
        Assert.Equal(8, job.State.SkippedSequences); // step 3 rolled back to checkpoint 2
        Assert.False(job.State.Outcome.IsCompleted);
    }

    /// <summary>A coordinator started again (a pod moved, kill -9) has judged no step of its run: the checkpoint it
    /// resumed from counts as healthy, so a rule firing at once goes back there, not to the start (which set every
    /// checkpoint aside).</summary>
    [Fact]
    public async Task A_rule_firing_at_the_first_logged_step_after_a_resume_rolls_back_to_the_resumed_checkpoint()
    {
        using var dir = new TempDir();
        using (var first = new TestJob(outDir: dir.Path, divergence: Spike))
        {
            await first.RegisterAll();
            first.Report(1, 0, (1, 6.0, 5), (2, 5.0, 5), (3, 4.5, 6), (4, 4.4, 6));
            first.CommitBoth(1, 4);
            first.Report(1, 0, (5, 4.3, 6), (6, 4.2, 6), (7, 4.1, 6), (8, 4.0, 6));
            first.CommitBoth(1, 8);
        }
        using var resumed = new TestJob(new JobOptions { Resume = ResumeMode.Yes }, outDir: dir.Path, divergence: Spike);
        Assert.All(await resumed.RegisterAll(), r => Assert.Equal(8L, r.StartStep));
        long rewound = -1;
        resumed.State.Rewound += s => rewound = s;

        Assert.Equal(Command.Restart, resumed.Report(1, 0, (9, 4.0, 500)).Command);

        Assert.Equal(8, rewound);
        Assert.Equal(8, resumed.State.Catalog.LatestValid()?.Manifest.Step);
    }

    /// <summary>A rollback is recorded in its target's manifest when it happens: a coordinator started again before the
    /// next checkpoint (a pod moved) skips the same data, keeps the lowered learning rate and counts on.</summary>
    [Fact]
    public async Task A_coordinator_started_again_after_a_rollback_and_before_the_next_checkpoint_keeps_its_skip_rate_and_count()
    {
        using var dir = new TempDir();
        using (var first = new TestJob(outDir: dir.Path, divergence: Spike))
        {
            await first.RegisterAll();
            first.Report(1, 0, (1, 6.0, 5), (2, 5.0, 5), (3, 4.5, 6), (4, 4.4, 6));
            first.CommitBoth(1, 4);
            Assert.Equal(Command.Restart, first.Report(1, 0, (7, 4.0, 500)).Command); // back to 4; the data of steps 5..7 skipped
            Assert.Equal(0.5, (await first.RegisterAll())[0].LearningRateScale);
        }

        using var resumed = new TestJob(new JobOptions { Resume = ResumeMode.Auto }, outDir: dir.Path, divergence: Spike);
        var replies = await resumed.RegisterAll();

        Assert.Equal(4L, replies[0].StartStep);
        Assert.Equal(0.5, replies[0].LearningRateScale);
        Assert.Equal(TestJob.NewBatchPlan().RankRows(7, 0, 2, TestJob.MicroBatches), resumed.Batches(1, 0, 4, 1).Steps[0].Sequences); // step 5 reads batch 7
        Assert.Equal(1, resumed.State.Rollbacks);
    }

    /// <summary>The coordinator judges rank 0's steps as its heartbeats bring them, after the ranks may have committed
    /// later checkpoints: rotation keeps the newest checkpoint at or before the last healthy step, the rollback's target.</summary>
    [Fact]
    public async Task Rotation_keeps_the_rollback_target_while_the_steps_after_it_are_not_yet_judged()
    {
        using var job = new TestJob(new JobOptions { KeepCheckpoints = 1 }, divergence: Spike);
        await job.RegisterAll();
        job.Report(1, 0, (1, 6.0, 5), (2, 5.0, 5));
        job.CommitBoth(1, 2);
        job.CommitBoth(1, 4); // committed before steps 3 and 4 were judged; keep_checkpoints = 1 alone would delete step 2
        long rewound = -1;
        job.State.Rewound += s => rewound = s;

        Assert.Equal(Command.Restart, job.Report(1, 0, (3, 4.5, 500)).Command);

        Assert.Equal(2, rewound);
        await job.RegisterAll();
        job.Report(2, 0, (3, 4.5, 6), (4, 4.4, 6));
        job.CommitBoth(2, 4); // step 4 judged healthy: step 2 may go now
        Assert.Equal([4L], job.State.Catalog.Committed().Select(d => long.Parse(Path.GetFileName(d)["step_".Length..])));
    }
}
