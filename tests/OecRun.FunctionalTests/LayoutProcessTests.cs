// A layout with both data and vocabulary parallelism, each rank a process: its split groups rendezvous through the
// coordinator and the job trains as one process does.
using Job;
using Rank.Configuration;
using OecRun.Launching;
using Rank.Model;
using Rank.Training;
using Rank.UnitTests;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public sealed class LayoutProcessTests(ITestOutputHelper log)
{
    const int Steps = 12;

    [Fact]
    public async Task Four_rank_processes_in_two_vocabulary_groups_train_as_one_process_does()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, [$"train.steps={Steps}", "train.warmup_steps=2", "train.batch_size=8", "train.sequence_length=32",
            "train.eval_every=0", "train.log_every=1", "train.threads=1", "data.synthetic_tokens=30000", "oec.method=mu_loss",
            "job.world_size=4", "job.vocab_parallel=2", "job.checkpoint_every=0", "job.heartbeat_interval_s=0.2",
            "job.rendezvous_timeout_s=20", "job.max_restarts=0", "run.out_dir=" + temp.File("job")]);
        var console = new StringWriter();

        int exit = await Launch.Local(config, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None)
            .WaitAsync(TimeSpan.FromMinutes(2));
        log.WriteLine(console.ToString());

        Assert.Equal(ExitCodes.Success, exit);
        Assert.Contains($"succeeded: finished {Steps} steps", File.ReadAllText(Path.Combine(config.Run.OutDir!, "coordinator.log")));
        using var reference = new Trainer(config with { Job = new JobOptions(), Run = new RunOptions { OutDir = temp.File("one") } });
        var losses = Enumerable.Range(0, Steps).Select(s => reference.Step(s).CrossEntropy).ToArray();
        var logged = MetricsLog.Read(Path.Combine(config.Run.OutDir!, "metrics.jsonl"));
        Assert.Equal(Enumerable.Range(1, Steps), logged.Select(m => m.Step));
        double lossError = logged.Max(m => Math.Abs(m.TrainLoss - losses[m.Step - 1]));
        using var model = new Gpt(config.Model, config.Data.ResolvedVocabSize, config.Train.SequenceLength);
        Checkpoint.Load(model, Path.Combine(config.Run.OutDir!, "model.safetensors"));
        var differences = Tensors.Parameters(reference.Model)
            .SelectMany(kv => kv.Value.Zip(Tensors.Parameters(model)[kv.Key], (a, b) => Math.Abs(a - b))).Order().ToArray();
        double p999 = differences[(int)(0.999 * (differences.Length - 1))];
        log.WriteLine($"against one process: losses differ by up to {lossError:G3}; largest parameter difference {differences[^1]:G3}, 99.9th percentile {p999:G3}");
        // The tolerances of VocabParallelTests, which runs the same layouts as threads.
        Assert.True(lossError < 1e-5, $"the losses differ from one process by up to {lossError}");
        Assert.True(differences[^1] < 1e-3, $"largest parameter difference {differences[^1]}");
        Assert.True(p999 < 1e-5, $"99.9th percentile of parameter differences {p999}");
    }
}
