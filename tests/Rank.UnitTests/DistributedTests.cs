// Data-parallel training in one process against its references: one rank, an uninterrupted run, a checkpoint that is
// corrupt; the whole jobs as processes are in OecRun.FunctionalTests.
using Job;
using Oec;
using Collectives;
using Coordinator;
using Rank.Configuration;
using Rank.Distributed;
using Rank.Model;
using Rank.Training;
using Xunit.Abstractions;

namespace Rank.UnitTests;

public class DistributedTests(ITestOutputHelper log)
{
    [Fact]
    public void Two_ranks_and_one_rank_take_the_same_loss_at_every_step_with_mu_centering()
    {
        using var temp = new TempDirectory();
        const int steps = 24;
        var config = TestConfigs.Tiny(temp.Path, steps: steps, method: Oec.OecMethod.MuCentering).WithTrain(t => t with { GradAccum = 2 });

        using var single = new Trainer(config);
        var reference = Enumerable.Range(0, steps).Select(s => single.Step(s).CrossEntropy).ToArray();

        var rendezvous = new InProcessRendezvous();
        var ring = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(30));
        var losses = new double[2][];
        var models = new Gpt[2];
        var trainers = new Trainer[2];
        var threads = Enumerable.Range(0, 2).Select(rank => new Thread(() =>
        {
            var comm = TcpRingCommunicator.Create(rendezvous, "equivalence", rank, 2, ring);
            trainers[rank] = new Trainer(config, comm);
            losses[rank] = Enumerable.Range(0, steps).Select(s => trainers[rank].Step(s).CrossEntropy).ToArray();
        })).ToList();
        threads.ForEach(t => t.Start());
        Assert.All(threads, t => Assert.True(t.Join(TimeSpan.FromMinutes(2)), "a rank did not finish within 2 minutes"));
        try
        {
            double worst = 0;
            for (int s = 0; s < steps; s++)
            {
                log.WriteLine($"step {s + 1}: one rank {reference[s]:R}, two ranks {losses[0][s]:R} / {losses[1][s]:R}");
                Assert.Equal(losses[0][s], losses[1][s]); // both ranks report the all-reduced loss
                worst = Math.Max(worst, Math.Abs(reference[s] - losses[0][s]));
            }
            double parameters = Tensors.MaxParameterDifference(single.Model, trainers[0].Model);
            log.WriteLine($"largest loss difference {worst:G3}; largest parameter difference {parameters:G3}");
            Assert.True(worst < 1e-4, $"the losses of one and two ranks differ by up to {worst}");
            Assert.True(parameters < 1e-4, $"the parameters of one and two ranks differ by up to {parameters}");
            Assert.Equal(0, Tensors.MaxParameterDifference(trainers[0].Model, trainers[1].Model)); // replicas stay identical
            Assert.True(Tensors.MuNorm(trainers[0].Model.OutputEmbedding) < 1e-6);
        }
        finally
        {
            foreach (var t in trainers) t?.Dispose();
        }
    }

    [Theory]
    [InlineData(OecMethod.MuLoss, false)]
    [InlineData(OecMethod.MuLoss, true)]
    [InlineData(OecMethod.None, false)]
    public void Gradients_all_reduced_layer_by_layer_during_backward_give_the_parameters_of_the_all_reduce_after_it(OecMethod method, bool tying)
    {
        using var temp = new TempDirectory();
        const int steps = 8;
        var config = (TestConfigs.Tiny(temp.Path, steps: steps, method: method).WithOec(o => o with { MuLossLambda = 1e-1 })
                      with { Model = new Model.ModelOptions { WeightTying = tying } }).WithTrain(t => t with { GradAccum = 2 }); // only the last micro-batch starts them

        Trainer[] Run(bool overlap, int[] started)
        {
            var rendezvous = new InProcessRendezvous();
            var ring = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(30));
            var trainers = new Trainer[2];
            var threads = Enumerable.Range(0, 2).Select(rank => new Thread(() =>
            {
                var comm = TcpRingCommunicator.Create(rendezvous, "overlap", rank, 2, ring);
                trainers[rank] = new Trainer(config.WithTrain(t => t with { OverlapGradReduce = overlap }), comm);
                for (int s = 0; s < steps; s++) trainers[rank].Step(s);
                started[rank] = trainers[rank].GroupsStartedInBackward;
            })).ToList();
            threads.ForEach(t => t.Start());
            Assert.All(threads, t => Assert.True(t.Join(TimeSpan.FromMinutes(2)), "a rank did not finish within 2 minutes"));
            return trainers;
        }
        int[] overlappedGroups = new int[2], afterGroups = new int[2];
        var overlapped = Run(overlap: true, overlappedGroups);
        var after = Run(overlap: false, afterGroups);
        try
        {
            double difference = Tensors.MaxParameterDifference(overlapped[0].Model, after[0].Model);
            log.WriteLine($"{method}, tying {tying}: groups started in backward {overlappedGroups[0]} (overlapped), {afterGroups[0]} (after); parameters differ by up to {difference:G3}");
            Assert.Equal([config.Model.NLayer!.Value + 1, config.Model.NLayer!.Value + 1], overlappedGroups); // ln_f (+ head), then every block
            Assert.Equal([0, 0], afterGroups);
            // The same sums, cut into other buckets, so the ring adds some elements in another order: rounding, no more.
            Assert.True(difference < 1e-5, $"overlapped and after-backward all-reduce end {difference} apart");
            Assert.Equal(0, Tensors.MaxParameterDifference(overlapped[0].Model, overlapped[1].Model));
        }
        finally
        {
            foreach (var t in overlapped.Concat(after)) t?.Dispose();
        }
    }

    [Fact]
    public void A_run_stopped_after_step_7_and_resumed_ends_with_the_same_parameters_as_an_uninterrupted_run()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.File("whole"), steps: 16).WithTrain(t => t with { LogEvery = 1 }) with { Job = new JobOptions { CheckpointEvery = 5 } };
        using var whole = new Trainer(config);
        whole.Run(TextWriter.Null);

        var halves = config with { Run = new RunOptions { OutDir = temp.File("halves") } };
        StopAfter first;
        using (var trainer = new Trainer(halves))
        {
            first = new StopAfter(7, new LocalSession(halves.Run.OutDir!, 3, halves.ToJson(), trainer.DataCursorAt));
            var stopped = trainer.Run(TextWriter.Null, first);
            Assert.True(stopped.Stopped);
            Assert.Equal(7, stopped.Steps);
        }
        var checkpoint = first.CheckpointDirectory(7);
        Assert.Equal(["manifest.json", "model.safetensors", "optimizer.safetensors", "rng.rank0.bin"], Directory.GetFiles(checkpoint).Select(Path.GetFileName).Order());
        using var resumed = new Trainer(halves);
        var result = resumed.Run(TextWriter.Null, new LocalSession(halves.Run.OutDir!, 3, halves.ToJson(), resumed.DataCursorAt, startStep: 7, resumeFrom: checkpoint));

        Assert.Equal(16, result.Steps);
        Assert.Equal(0, Tensors.MaxParameterDifference(whole.Model, resumed.Model)); // bitwise on the CPU
        var expected = MetricsLog.Read(Path.Combine(config.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.GradNorm));
        var actual = MetricsLog.Read(Path.Combine(halves.Run.OutDir!, "metrics.jsonl")).Select(m => (m.Step, m.TrainLoss, m.GradNorm));
        Assert.Equal(expected, actual); // one line per step, none lost or repeated across the stop
    }

    [Fact]
    public void A_corrupt_checkpoint_is_refused_naming_the_file()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 4) with { Job = new JobOptions { CheckpointEvery = 2 } };
        using (var trainer = new Trainer(config)) trainer.Run(TextWriter.Null);
        string dir = Path.Combine(temp.Path, "checkpoints", "step_00000002");
        string optimizerFile = Path.Combine(dir, "optimizer.safetensors");
        var bytes = File.ReadAllBytes(optimizerFile);
        bytes[^1] ^= 1;
        File.WriteAllBytes(optimizerFile, bytes);

        using var fresh = new Trainer(config);
        var e = Assert.Throws<InvalidDataException>(() => fresh.LoadCheckpoint(dir));

        Assert.Contains("optimizer.safetensors", e.Message);
        Assert.Contains("corrupt", e.Message);
    }
    /// <summary>A stop agreed at the last step finishes the run: it writes the model (a stopped run would leave none,
    /// and its resume would find nothing left to train).</summary>
    [Fact]
    public void A_stop_at_the_last_step_finishes_the_run_and_writes_the_model()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 4);
        using var trainer = new Trainer(config);
        var session = new StopAfter(4, new LocalSession(temp.Path, 3, config.ToJson(), trainer.DataCursorAt));

        var result = trainer.Run(TextWriter.Null, session);

        Assert.False(result.Stopped);
        Assert.Equal(4, result.Steps);
        Assert.True(File.Exists(Path.Combine(temp.Path, "model.safetensors")));
        Assert.True(Directory.Exists(session.CheckpointDirectory(4))); // the stop's checkpoint, as before
    }

    /// <summary>A session that asks to stop once `step` steps are done.</summary>
    sealed class StopAfter(long step, LocalSession inner) : ITrainingSession
    {
        long done;
        public long StartStep => inner.StartStep;
        public string? ResumeFrom => inner.ResumeFrom;
        public bool StopRequested => done + 1 >= step;
        public string CheckpointDirectory(long s) => inner.CheckpointDirectory(s);
        public void Progress(long stepsDone, StepMetrics? metrics) => done = stepsDone;
        public void CheckpointWritten(long s, IReadOnlyList<CheckpointFile> files) => inner.CheckpointWritten(s, files);
    }
}
