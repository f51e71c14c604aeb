// A real job driven into divergence (learning rate 3, no OEC): the coordinator's rule fires, and the job rolls back (keeping
// the steps it undid, marked) or stops.
using Job;
using System.Text.Json;
using Coordinator;
using Data;
using Rank.Configuration;
using OecRun.Launching;
using OecRun.Reporting;
using Rank.Distributed;
using Rank.Training;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public class DivergenceJobTests(ITestOutputHelper log)
{
    /// <summary>2 ranks, 40 steps of 8 x 32 tokens at a peak learning rate of 3 without OEC: by the first logged step
    /// (5) max |logit| is about 230 and the loss about 130 nats, twenty times the loss of a uniform guess (ln 512 = 6.2).
    /// At a quarter or a sixteenth of that rate (one or two rollbacks) the tiny model trains. Every checkpoint is kept (keep_checkpoints 10 of the 8 a run
    /// writes), so the ones a rollback sets aside do not depend on how many the ranks wrote before the rule fired.</summary>
    static readonly string[] Settings =
    [
        "oec.method=none", "train.learning_rate=3", "train.steps=40", "train.warmup_steps=5", "train.batch_size=8",
        "train.sequence_length=32", "train.eval_every=0", "train.log_every=5", "train.threads=1", "data.synthetic_tokens=30000",
        "job.world_size=2", "job.checkpoint_every=5", "job.keep_checkpoints=10", "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=10",
        "divergence.max_abs_logit_limit=100", "divergence.learning_rate_factor=0.25",
    ];

    async Task<(int Exit, JobState Job, string Console, MetricsHistory Live)> Run(RunConfig config)
    {
        var console = new StringWriter();
        JobState? job = null;
        MetricsHistory? live = null;
        int exit = await Launch.Local(config, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None,
            created: j => job = j, hosted: h => live = h.History).WaitAsync(TimeSpan.FromMinutes(5));
        log.WriteLine(console.ToString());
        return (exit, job!, console.ToString(), live!);
    }

    [Fact]
    public async Task A_diverging_job_rolls_back_skips_the_data_lowers_the_learning_rate_and_ends_with_a_finite_loss()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, [.. Settings, "run.out_dir=" + temp.File("run")]);

        var (exit, job, console, live) = await Run(config);

        Assert.Equal(0, exit);
        Assert.InRange(job.Rollbacks, 1, 3);
        Assert.Equal((job.Rollbacks, 0), (job.DivergenceEvents, job.Restarts));
        Assert.Equal(job.Rollbacks * 5 * 8, job.SkippedSequences); // each time steps 1..5 (8 sequences each) rolled back to the start
        Assert.Contains("divergence rule max_abs_logit_limit fired at step 5: max_abs_logit", console);
        Assert.Contains("rollback 1 of 3: generation 2 resumes from the start (no checkpoint before the trouble); the data of steps 1..5 is skipped (40 sequences", console);
        Assert.Contains("succeeded: finished 40 steps", console);

        // metrics.jsonl holds the run that went on: healthy, at the lowered rate, ending below a uniform guess.
        var steps = MetricsLog.Read(Path.Combine(config.Run.OutDir!, "metrics.jsonl"));
        Assert.Equal(Enumerable.Range(1, 8).Select(i => 5 * i), steps.Select(s => s.Step));
        Assert.All(steps, s => Assert.True(s.MaxAbsLogit <= 100, $"step {s.Step}: max |logit| {s.MaxAbsLogit} after the rollback"));
        double scale = Math.Pow(0.25, job.Rollbacks);
        Assert.All(steps, s => Assert.Equal(config.Train.LearningRateAt(s.Step - 1) * scale, s.LearningRate, 1e-12));
        Assert.True(double.IsFinite(steps[^1].TrainLoss) && steps[^1].TrainLoss < Math.Log(512), $"final loss {steps[^1].TrainLoss}");

        // The steps that fired the rule stay: in metrics.jsonl marked as rolled back to the start, on the live page and in
        // the report apart from the curve.
        var undone = MetricsLog.ReadAll(Path.Combine(config.Run.OutDir!, "metrics.jsonl")).Where(s => s.RolledBackTo is not null).ToList();
        Assert.Equal(job.Rollbacks, undone.Count(s => s.Step == 5));
        Assert.All(undone, s => Assert.Equal(0, s.RolledBackTo));
        Assert.Contains(undone, s => s.Step == 5 && s.MaxAbsLogit > 100);
        var passes = live.RolledBack(0);
        Assert.Equal(job.Rollbacks, passes.Count);
        Assert.All(passes, p => Assert.Equal(0, p.To));
        Assert.Contains(passes, p => p.Points.Any(s => s.Step == 5 && s.MaxAbsLogit > 100));
        var report = new StringWriter();
        MetricsReport.Write([config.Run.OutDir!], temp.File("report"), 640, 480, report);
        Assert.Contains($"run: 8 logged steps from {Path.Combine(config.Run.OutDir!, "metrics.jsonl")}; {undone.Count} rolled-back steps drawn dotted (went back to step 0)", report.ToString());

        // The data cursor is exact: the last checkpoint is after 40 steps that read batches 5 x rollbacks onwards.
        var manifest = CheckpointCatalog.ReadVerified(Path.Combine(config.Run.OutDir!, "checkpoints", "step_00000040"));
        using var data = new TrainingData(config.Data, config.Train.SequenceLength);
        var plan = new BatchPlan(data.Train, 8, config.Train.Seed);
        Assert.Equal(plan.CursorAt(40 + 5 * job.Rollbacks), (manifest.Epoch, manifest.Position));
        Assert.Equal(new DataSkip(0, 5 * job.Rollbacks), Assert.Single(manifest.DataSkips!));
        Assert.Equal(scale, manifest.LearningRateScale);
        Assert.True(Directory.Exists(Path.Combine(config.Run.OutDir!, "checkpoints", "rolled-back", "step_00000005.g1")));
        Assert.True(File.Exists(Path.Combine(config.Run.OutDir!, "model.safetensors")));
    }

    [Fact]
    public async Task With_action_stop_a_diverging_job_stops_with_exit_code_3_naming_the_rule()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, [.. Settings, "divergence.action=stop", "run.out_dir=" + temp.File("run")]);

        var (exit, job, console, _) = await Run(config);

        Assert.Equal(3, exit);
        Assert.Equal((1, 0, JobPhase.Diverged), (job.DivergenceEvents, job.Rollbacks, job.Phase));
        var reason = (await job.Outcome).Reason;
        Assert.StartsWith("divergence rule max_abs_logit_limit fired at step 5: max_abs_logit", reason);
        Assert.Contains("> 100; divergence.action = stop, so the job stops. The last healthy step was 0; there is no checkpoint before the trouble to continue from: " +
                        "start afresh in another run.out_dir", reason); // job.resume would be refused: nothing to resume
        Assert.Contains($"diverged: {reason}", console);
        Assert.False(File.Exists(Path.Combine(config.Run.OutDir!, "model.safetensors")));
    }
}
