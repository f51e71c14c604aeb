// One rank's training: the step, validation, checkpoints, the metrics log and the final model.
using System.Diagnostics;
using Collectives;
using Coordinator;
using Data;
using Oec;
using Rank.Configuration;
using Rank.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.Training;

public sealed record TrainResult(int Steps, double FinalTrainLoss, double? FinalValLoss, bool Diverged, string OutDir, bool Stopped = false);

/// <summary>
/// Data-parallel: every rank holds the whole model; each step, rank r of W trains on its W-th of every micro-batch
/// (rows from <c>rows(step)</c>, by default the local BatchPlan), and the gradients are averaged over the ranks before
/// clipping, so that the update equals the one-process update on the whole global batch. Without a communicator the
/// trainer is one process on the whole batch.
/// </summary>
public sealed class Trainer : IDisposable
{
    public RunConfig Config { get; }
    public Gpt Model { get; }
    public IVocabularyReduction Vocab { get; }
    public int Rank { get; }
    public int WorldSize { get; }
    public TrainingData Data { get; }
    static readonly Lock InitGate = new();
    readonly ICommunicator? comm;
    readonly GradientBucketer? bucketer;
    readonly OptimizerHelper optimizer;
    readonly List<Parameter> parameters;
    readonly BatchPlan trainBatches, valBatches;
    readonly Func<long, long[]> rows;  // this rank's sequences of a step, micro-batch after micro-batch
    readonly int[] inputs, targets;    // this rank's share of one step [accum * B/W, T], row-major

    public Trainer(RunConfig config, ICommunicator? comm = null, Func<long, long[]>? rows = null)
    {
        TorchRuntime.EnsureLoaded();
        Config = config.Validated();
        var (model, data, train) = (Config.Model, Config.Data, Config.Train);
        (this.comm, Rank, WorldSize) = (comm, comm?.Rank ?? 0, comm?.WorldSize ?? 1);
        if (train.BatchSize % WorldSize != 0)
            throw new ArgumentException($"train.batch_size = {train.BatchSize}: must be divisible by the world size {WorldSize}, so that every rank takes an equal share of each micro-batch");
        if (train.Threads > 0) set_num_threads(train.Threads);

        lock (InitGate) // trainers sharing a process (tests) must not interleave draws from the global generator
        {
            manual_seed((long)(train.Seed % long.MaxValue));
            Model = new Gpt(model, data.ResolvedVocabSize, train.SequenceLength);
        }
        Vocab = new LocalVocabulary(Model.VocabSize);
        parameters = Model.parameters().ToList();
        // Weight decay on matrices and embeddings only, not on LayerNorm weights (as nanoGPT and the paper's code).
        optimizer = optim.AdamW(new[]
        {
            new AdamW.ParamGroup(parameters.Where(p => p.dim() >= 2), train.LearningRate, train.Beta1, train.Beta2, train.Eps, train.WeightDecay, false, false),
            new AdamW.ParamGroup(parameters.Where(p => p.dim() < 2), train.LearningRate, train.Beta1, train.Beta2, train.Eps, 0, false, false),
        }, train.LearningRate, train.Beta1, train.Beta2, train.Eps, train.WeightDecay);
        if (comm is not null && WorldSize > 1)
        {
            bucketer = new GradientBucketer(comm, parameters.Cast<Tensor>().ToList());
            bucketer.BroadcastParameters(root: 0); // every replica starts from rank 0's initialisation
        }

        Data = new TrainingData(data, train.SequenceLength);
        trainBatches = new BatchPlan(Data.Train, train.BatchSize * train.GradAccum, train.Seed);
        valBatches = new BatchPlan(Data.Validation, train.BatchSize, seed: 0);
        this.rows = rows ?? (step => trainBatches.RankRows(step, Rank, WorldSize, train.GradAccum));
        inputs = new int[train.BatchSize / WorldSize * train.GradAccum * train.SequenceLength];
        targets = new int[inputs.Length];
    }

    /// <summary>
    /// One optimizer step, top to bottom: learning rate, then per micro-batch forward, loss with the regulariser,
    /// backward; gradients averaged over the ranks; clip, optimizer step, zero grad, mu-centering. The cross-entropy is
    /// the global batch's. Statistics, when asked for (they cost a few passes over the logits), describe this rank's
    /// share of the last micro-batch; otherwise null. Stop is true on every rank when any rank asked to stop.
    /// </summary>
    public (double CrossEntropy, double GradNorm, LogitStatistics? Stats, bool Stop) Step(long step, bool statistics = true, bool stopRequested = false)
    {
        var train = Config.Train;
        int B = train.BatchSize / WorldSize, T = train.SequenceLength, accum = train.GradAccum;
        foreach (var group in optimizer.ParamGroups) group.LearningRate = train.LearningRateAt((int)step);

        long[] mine = rows(step);
        if (mine.Length != B * accum) throw new InvalidOperationException($"step {step}: rank {Rank} was given {mine.Length} sequences, expected {B * accum}");
        for (int row = 0; row < mine.Length; row++)
            trainBatches.Plan.Fill(mine[row], inputs.AsSpan(row * T, T), targets.AsSpan(row * T, T));
        using var x = tensor(inputs, dtype: ScalarType.Int64).view(accum, B, T);
        using var y = tensor(targets, dtype: ScalarType.Int64).view(accum, B * T);
        double crossEntropy = 0;
        LogitStatistics? stats = null;
        for (int micro = 0; micro < accum; micro++)
        {
            using var scope = NewDisposeScope();
            var hidden = Model.forward(x[micro]).view(B * T, Model.Dim);                     // [B*T, d]
            var logits = OutputEmbedding.Logits(hidden, Model.OutputEmbedding, Config.Oec);  // [B*T, V] fp32
            var loss = OutputEmbedding.Loss(logits, y[micro], Model.OutputEmbedding, Config.Oec, Vocab);
            (loss.Loss / accum).backward();                                                  // mean over this rank's share
            crossEntropy += loss.CrossEntropy.item<float>() / accum;
            if (statistics && micro == accum - 1) stats = LogitStatistics.Compute(logits, Model.OutputEmbedding, Vocab);
        }

        bucketer?.AverageGradients();                                                        // mean over the global batch
        bool stop = stopRequested;
        if (comm is not null && WorldSize > 1)
        {
            using var shared = tensor(new[] { crossEntropy, stopRequested ? 1.0 : 0.0 });     // [cross-entropy, stop votes]
            comm.AllReduce(shared, ReduceOp.Sum);
            crossEntropy = shared[0].item<double>() / WorldSize;
            stop = shared[1].item<double>() > 0;
        }
        double gradNorm = train.GradClip > 0
            ? nn.utils.clip_grad_norm_(parameters, train.GradClip)
            : nn.utils.clip_grad_norm_(parameters, double.PositiveInfinity);
        optimizer.step();
        optimizer.zero_grad();
        if (Config.Oec.Method == OecMethod.MuCentering) OutputEmbedding.Center(Model.OutputEmbedding, Vocab);
        return (crossEntropy, gradNorm, stats, stop);
    }

    /// <summary>Mean cross-entropy over the validation batches (the same batches at every evaluation); each rank
    /// evaluates its share of every batch and the means are averaged over the ranks.</summary>
    public double Evaluate()
    {
        int B = Config.Train.BatchSize / WorldSize, T = Config.Train.SequenceLength;
        var valInputs = new int[B * T];
        var valTargets = new int[B * T];
        double sum = 0;
        Model.eval();
        using (no_grad())
        {
            for (int k = 0; k < Config.Train.EvalBatches; k++)
            {
                using var scope = NewDisposeScope();
                long[] mine = valBatches.RankRows(k, Rank, WorldSize, 1);
                for (int row = 0; row < mine.Length; row++)
                    valBatches.Plan.Fill(mine[row], valInputs.AsSpan(row * T, T), valTargets.AsSpan(row * T, T));
                var hidden = Model.forward(tensor(valInputs, dtype: ScalarType.Int64).view(B, T)).view(B * T, Model.Dim);
                var logits = OutputEmbedding.Logits(hidden, Model.OutputEmbedding, Config.Oec);
                var loss = OutputEmbedding.Loss(logits, tensor(valTargets, dtype: ScalarType.Int64), Model.OutputEmbedding, Config.Oec, Vocab);
                sum += loss.CrossEntropy.item<float>();
            }
        }
        Model.train();
        if (comm is not null && WorldSize > 1)
        {
            using var shared = tensor(new[] { sum });
            comm.AllReduce(shared, ReduceOp.Sum);
            sum = shared.item<double>() / WorldSize;
        }
        return sum / Config.Train.EvalBatches;
    }

    /// <summary>
    /// The run from the session's start step: steps, validation, checkpoints every job.checkpoint_every steps (and when
    /// asked to stop), progress to the session; rank 0 also writes config.json, metrics.jsonl, the console lines and
    /// model.safetensors at the end.
    /// </summary>
    public TrainResult Run(TextWriter console, ITrainingSession? session = null)
    {
        var train = Config.Train;
        string outDir = Config.Run.OutDir!; // set by Validated
        session ??= new LocalSession(outDir, Config.Job.KeepCheckpoints, Config.ToJson());
        bool lead = Rank == 0;
        long start = session.StartStep;
        if (session.ResumeFrom is { } from) LoadCheckpoint(from);
        if (lead)
        {
            Directory.CreateDirectory(outDir);
            File.WriteAllText(Path.Combine(outDir, "config.json"), Config.ToJson());
            console.WriteLine($"model: {Model.parameters().Sum(p => p.numel()):N0} parameters, vocabulary {Model.VocabSize} (padded), oec.method = {Config.Oec.Method}");
            console.WriteLine($"data: {Data.Train.Count:N0} train and {Data.Validation.Count:N0} validation sequences of {train.SequenceLength} tokens" +
                              (Data.Corpus is null ? "" : $"; the synthetic corpus's entropy rate, the best achievable loss, is {Data.Corpus.EntropyRateNats:F3} nats"));
            if (session.ResumeFrom is not null) console.WriteLine($"resumed from {session.ResumeFrom} at step {start}");
        }

        using var log = lead ? new MetricsLog(Path.Combine(outDir, "metrics.jsonl"), keepThrough: start) : null;
        var clock = Stopwatch.StartNew();
        double loss = double.NaN;
        double? valLoss = null;
        for (long step = start; step < train.Steps; step++)
        {
            bool validate = train.EvalEvery > 0 && ((step + 1) % train.EvalEvery == 0 || step == train.Steps - 1);
            bool logged = (step + 1) % train.LogEvery == 0 || validate || step == train.Steps - 1;
            var stepClock = Stopwatch.StartNew();
            var (crossEntropy, gradNorm, measured, stop) = Step(step, statistics: logged, session.StopRequested);
            double seconds = stepClock.Elapsed.TotalSeconds;
            loss = crossEntropy;
            double? val = validate || !double.IsFinite(loss) ? Evaluate() : null;
            if (val is not null) valLoss = val;
            StepMetrics? metrics = null;
            if (logged || !double.IsFinite(loss))
            {
                var stats = measured ?? new LogitStatistics(double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
                double tokensPerSecond = (double)train.BatchSize * train.GradAccum * train.SequenceLength / seconds;
                metrics = new StepMetrics((int)step + 1, loss, val, train.LearningRateAt((int)step), gradNorm, tokensPerSecond, seconds,
                    stats.MuNorm, stats.MeanLogit, stats.LogitStd, stats.MaxAbsLogit, stats.MeanLogZ, stats.RLog);
                log?.Write(metrics);
                var eta = TimeSpan.FromSeconds(clock.Elapsed.TotalSeconds / (step + 1 - start) * (train.Steps - step - 1));
                if (lead)
                    console.WriteLine($"step {step + 1,5}/{train.Steps} | loss {loss:F4}{(val is null ? "" : $" | val {val:F4}")} | lr {train.LearningRateAt((int)step):0.0e+00} " +
                                      $"| grad {gradNorm:F2} | |mu| {stats.MuNorm:F4} | max|logit| {stats.MaxAbsLogit:F2} | {tokensPerSecond / 1000:F1}k tok/s | eta {eta:m\\:ss}");
            }
            session.Progress(step + 1, metrics);
            if (!double.IsFinite(loss))
            {
                if (lead) console.WriteLine($"diverged: the training loss is {loss} at step {step + 1}; stopping (metrics kept in {outDir}/metrics.jsonl)");
                return new TrainResult((int)step + 1, loss, valLoss, Diverged: true, outDir);
            }
            int every = Config.Job.CheckpointEvery;
            if (stop || (every > 0 && ((step + 1) % every == 0 || step + 1 == train.Steps)))
            {
                string dir = session.CheckpointDirectory(step + 1);
                session.CheckpointWritten(step + 1, trainBatches.CursorAt(step + 1), SaveCheckpoint(dir));
                if (lead) console.WriteLine($"checkpoint: step {step + 1} in {dir}");
            }
            if (stop)
            {
                if (lead) console.WriteLine($"stopped after step {step + 1}; the checkpoint resumes it");
                return new TrainResult((int)step + 1, loss, valLoss, Diverged: false, outDir, Stopped: true);
            }
        }
        if (lead)
        {
            Checkpoint.Save(Model, Config.ToJson(), Path.Combine(outDir, "model.safetensors"));
            console.WriteLine($"done: {train.Steps} steps in {clock.Elapsed:m\\:ss}, train loss {loss:F4}, val loss {valLoss:F4}; saved {outDir}/model.safetensors");
        }
        return new TrainResult(train.Steps, loss, valLoss, Diverged: false, outDir);
    }

    /// <summary>
    /// Writes this rank's part of a checkpoint into <paramref name="dir"/>, each file whole or not at all: rank 0 the
    /// model (safetensors, loadable from Python) and the optimizer state (TorchSharp's format); every rank its random
    /// generator state. Replicas are identical, so rank 0's model and optimizer stand for all. Returns the files for the manifest.
    /// </summary>
    public IReadOnlyList<CheckpointFile> SaveCheckpoint(string dir)
    {
        Directory.CreateDirectory(dir);
        var written = new List<string>();
        if (Rank == 0)
        {
            written.Add(Path.Combine(dir, "model.safetensors"));
            Checkpoint.Save(Model, Config.ToJson(), written[^1]);
            written.Add(Path.Combine(dir, "optimizer.bin"));
            AtomicFile.Write(written[^1], s =>
            {
                using var writer = new BinaryWriter(s, System.Text.Encoding.UTF8, leaveOpen: true);
                optimizer.save_state_dict(writer);
            });
        }
        written.Add(Path.Combine(dir, $"rng.rank{Rank}.bin"));
        using (var state = random.get_rng_state())
            AtomicFile.Write(written[^1], s => s.Write(state.data<byte>().ToArray()));
        return written.Select(CheckpointCatalog.Describe).ToList();
    }

    /// <summary>Loads a committed checkpoint after verifying the checksums of the files it reads; a rank whose own
    /// random-state file is absent (the world size changed) keeps its generator as it is.</summary>
    public void LoadCheckpoint(string dir)
    {
        string rng = $"rng.rank{Rank}.bin";
        var manifest = CheckpointCatalog.ReadVerified(dir, f => f.Name is "model.safetensors" or "optimizer.bin" || f.Name == rng);
        Checkpoint.Load(Model, Path.Combine(dir, "model.safetensors"));
        using (var reader = new BinaryReader(File.OpenRead(Path.Combine(dir, "optimizer.bin"))))
            optimizer.load_state_dict(reader);
        if (manifest.Files.Any(f => f.Name == rng))
        {
            using var state = tensor(File.ReadAllBytes(Path.Combine(dir, rng)), dtype: ScalarType.Byte);
            random.set_rng_state(state);
        }
    }

    public void Dispose()
    {
        bucketer?.Dispose();
        optimizer.Dispose();
        Model.Dispose();
        Data.Dispose();
    }
}
