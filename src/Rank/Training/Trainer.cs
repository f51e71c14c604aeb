// One rank's training: the step, validation, checkpoints, the metrics log and the final model.
using System.Diagnostics;
using Collectives;
using Job;
using Data;
using Oec;
using Rank.Configuration;
using Rank.Model;
using Rank.Parallel;
using Kernels;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.Training;

public sealed record TrainResult(int Steps, double FinalTrainLoss, double? FinalValLoss, bool Diverged, string OutDir, bool Stopped = false);

/// <summary>
/// One rank of a <see cref="ParallelLayout"/> of W = dp x tp ranks (<see cref="Parallelize"/> applies it): the tp
/// ranks of a replica hold the embeddings split by rows (<see cref="ShardedVocabulary"/>); the dp replicas each train
/// on their dp-th of every micro-batch (rows from <c>rows(step)</c>, by default the local BatchPlan), and every
/// gradient is averaged over the ranks that hold the same parameter before clipping, so that the update equals the
/// one-process update on the whole global batch. Without a communicator the trainer is one process on the whole batch.
/// </summary>
public sealed class Trainer : IDisposable
{
    public RunConfig Config { get; }
    public Gpt Model { get; }
    public IVocabularyReduction Vocab { get; }
    public int Rank { get; }
    public int WorldSize { get; }
    /// <summary>dp x tp: this rank's replica (DataRank) and vocabulary shard (VocabRank).</summary>
    public ParallelLayout Layout { get; }
    public TrainingData Data { get; }
    /// <summary>Multiplies the whole learning-rate schedule of train.learning_rate: 1, or what the coordinator's
    /// divergence rollbacks left (divergence.learning_rate_factor per rollback).</summary>
    public double LearningRateScale { get; init; } = 1;
    /// <summary>The AdamW optimizer, read-only use: FlatAdamW (train.zero = 0 or no data group; the vocabulary
    /// benchmark measures its per-parameter state, tests its dtypes) or ZeroAdamW.</summary>
    public IOptimizer Optimizer => (IOptimizer?)zero ?? flat!;
    /// <summary>Parameters of the whole model (this rank's vocabulary shard of the embeddings), counted before ZeRO-3 frees any.</summary>
    public long ParameterCount { get; }
    /// <summary>The dtype of the matmuls (train.precision): Float32 or BFloat16. Weights, gradients, optimizer state and loss are fp32.</summary>
    public ScalarType Compute { get; }
    /// <summary>Where this rank computes (train.device): the CPU, or cuda:LOCAL_RANK. The model, its gradients, the
    /// optimizer state and every tensor a step makes live there; the token ids are copied there each step.</summary>
    public Device Device { get; }
    /// <summary>Gradient groups whose all-reduce the last step started during backward (train.overlap_grad_reduce):
    /// n_layer + 1 when it overlaps (ZeRO stage 1: n_layer, the root after backward), 0 when every all-reduce waited for the end of backward.</summary>
    public int GroupsStartedInBackward => (gradients as DataParallelGradients)?.GroupsStartedInBackward ?? zero?.GroupsStartedInBackward ?? 0;
    /// <summary>Told where each phase of <see cref="Step"/> ends (the model's forward included); observes only. Null: no profile.</summary>
    public IStepProfiler? Profiler
    {
        get => profiler;
        set => (profiler, Model.PhaseEnded) = (value, value is null ? null : value.Mark);
    }
    IStepProfiler? profiler;
    static readonly Lock InitGate = new();
    readonly ICommunicator? comm;
    readonly ParallelGroups groups;
    readonly IGradientReduction? gradients; // null: no data group
    readonly IOecMethod method;
    readonly FlatAdamW? flat;               // train.zero = 0, or no data group: every rank holds the whole state
    readonly ZeroAdamW? zero;               // train.zero 1-3 over the data group
    readonly BatchPlan trainBatches, valBatches;
    readonly Func<long, long[]> rows;  // this rank's sequences of a step, micro-batch after micro-batch
    readonly int replicaBatch;         // B / dp: sequences of each micro-batch that this replica trains on
    readonly int[] inputs, targets;    // this rank's share of one step [accum * B/dp, T], row-major

    /// <param name="localRank">This rank's index on its machine (LOCAL_RANK): its GPU with train.device = cuda.</param>
    public Trainer(RunConfig config, ICommunicator? comm = null, Func<long, long[]>? rows = null, int localRank = 0)
    {
        TorchRuntime.EnsureLoaded();
        // Validated once, where the process took it in (RunConfig.Load, FromJson, Validated): here only checked for that.
        Config = config.Run.OutDir is not null && config.Model.NLayer is not null ? config
            : throw new ArgumentException("the trainer takes a validated configuration (RunConfig.Load, RunConfig.FromJson or Validated()): this one has no resolved model or run.out_dir");
        Device = ComputeDevice.Select(Config.Train.Device, localRank);
        var (model, data, train) = (Config.Model, Config.Data, Config.Train);
        (this.comm, Rank, WorldSize) = (comm, comm?.Rank ?? 0, comm?.WorldSize ?? 1);
        Layout = new ParallelLayout(WorldSize, Config.Job.VocabParallel);
        replicaBatch = Layout.ReplicaBatch(train.BatchSize);
        if (train.Threads > 0) set_num_threads(train.Threads);
        Compute = train.Precision == Precision.Bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        method = Config.Oec.Resolve();

        lock (InitGate) // trainers sharing a process (tests) must not interleave draws from the global generator
        {
            Model = new Gpt(model, data.ResolvedVocabSize, train.SequenceLength, seed: (long)(train.Seed % long.MaxValue), compute: Compute);
        }
        // The parallel layout, in Parallelize's order; initialised on the CPU, so that a GPU run starts from the CPU run's weights.
        groups = Parallelize.SplitGroups(comm, Layout);
        Vocab = Parallelize.ApplyVocabParallel(Model, groups.Vocab, tokens: data.ResolvedVocabSize);
        Parallelize.ApplyActivationCheckpointing(Model, train.Checkpointing);
        if (Device.type != DeviceType.CPU) Model.to(Device);
        Model.Kernels = FusedKernels.Resolve(train.FusedKernels, Device, note: Console.Error.WriteLine);
        ParameterCount = Model.parameters().Sum(p => p.numel());
        // Weight decay on matrices and embeddings only, not on LayerNorm weights (as nanoGPT and the paper's code).
        if (train.Zero > 0 && groups.Data is not null)
            gradients = zero = Parallelize.ApplyZero(Model, groups, train.Zero, train.WeightDecay, train.Beta1, train.Beta2, train.Eps, overlap: train.Overlaps && groups.Vocab is null);
        else
        {
            gradients = Parallelize.ApplyDataParallel(Model, groups, overlap: train.Overlaps);
            var parameters = Model.parameters().ToList();
            flat = new FlatAdamW([(parameters.Where(p => p.dim() >= 2).ToList(), train.WeightDecay), (parameters.Where(p => p.dim() < 2).ToList(), 0)],
                                 train.Beta1, train.Beta2, train.Eps) { Kernels = Model.Kernels };
        }

        Data = new TrainingData(data, train.SequenceLength);
        trainBatches = new BatchPlan(Data.Train, train.BatchSize * train.GradAccum, train.Seed);
        valBatches = new BatchPlan(Data.Validation, train.BatchSize, seed: 0);
        this.rows = rows ?? (step => trainBatches.RankRows(step, DataRank, Layout.DataParallel, train.GradAccum));
        inputs = new int[replicaBatch * train.GradAccum * train.SequenceLength];
        targets = new int[inputs.Length];
    }

    int DataRank => Layout.DataRank(Rank);
    int VocabRank => Layout.VocabRank(Rank);

    /// <summary>
    /// One optimizer step, top to bottom: per micro-batch forward, loss with the method's regulariser, backward;
    /// gradients averaged over the replicas; clip, optimizer step, zero grad, the method's after-step hook
    /// (mu-centering); the metrics come back. The cross-entropy
    /// is the global batch's. Statistics, when asked for (a few more passes over each chunk of logits), describe this
    /// replica's share of the last micro-batch, over the whole vocabulary; otherwise null. Stop is true on every rank
    /// when any rank asked to stop.
    /// </summary>
    public (double CrossEntropy, double GradNorm, LogitStatistics? Stats, bool Stop) Step(long step, bool statistics = true, bool stopRequested = false)
    {
        var train = Config.Train;
        int B = replicaBatch, T = train.SequenceLength, accum = train.GradAccum;

        long[] mine = rows(step);
        if (mine.Length != B * accum) throw new InvalidOperationException($"step {step}: rank {Rank} was given {mine.Length} sequences, expected {B * accum}");
        trainBatches.Plan.FillRows(mine, inputs, targets);
        using var inputIds = tensor(inputs, dtype: ScalarType.Int64, device: Device);
        using var targetIds = tensor(targets, dtype: ScalarType.Int64, device: Device);
        using var x = inputIds.view(accum, B, T);
        using var y = targetIds.view(accum, B * T);
        Profiler?.Mark("inputs");
        double crossEntropy = 0;
        LogitStatistics? stats = null;
        for (int micro = 0; micro < accum; micro++)
        {
            using var scope = NewDisposeScope();
            var hidden = Model.forward(x[micro]).view(B * T, Model.Dim);                     // [B*T, d] fp32
            if (Profiler is { } profiled) hidden = Boundary.Mark(hidden, () => profiled.Mark("backward: head and loss"));
            var loss = LossOf(hidden, y[micro], statistics && micro == accum - 1);        // logits chunk by chunk, never [B*T, V] at once
            Profiler?.Mark("head and loss");
            gradients?.BeforeBackward(lastMicroBatch: micro == accum - 1);                  // its backward starts the all-reduces layer by layer
            (loss.Loss / accum).backward();                                                  // mean over this rank's share
            Profiler?.Mark("backward: blocks and embedding");
            Model.ThrowIfRecomputeFailed(step);
            gradients?.AfterBackward(step);
            crossEntropy += loss.CrossEntropy.item<float>() / accum;
            stats = loss.Statistics ?? stats;
        }

        gradients?.Average();                                                                // mean over the global batch (data group)
        Profiler?.Mark("gradient reduction");
        bool stop = stopRequested;
        double gradNorm;
        using (NewDisposeScope()) // roots the temporaries (see OutputEmbedding.Center on TorchSharp's finalizers)
        {
            if (comm is not null && WorldSize > 1)
            {
                using var shared = tensor(new[] { crossEntropy, stopRequested ? 1.0 : 0.0 }, device: Device); // [cross-entropy, stop votes]
                comm.AllReduce(shared, ReduceOp.Sum);                                        // a replica's tp ranks hold the same CE
                var sums = shared.cpu().data<double>().ToArray();                               // one wait for the device
                crossEntropy = sums[0] / WorldSize;
                stop = sums[1] > 0;
            }
            gradNorm = zero?.ClipGradNorm(train.GradClip)
                ?? (groups.Vocab is { } vocabGroup ? ShardedClipping.ClipGradNorm(Model, vocabGroup, train.GradClip) : flat!.ClipGradNorm(train.GradClip));
        }
        Profiler?.Mark("clip");
        Optimizer.Step(LearningRateAt(step));                                               // ZeRO: this rank's shard, then the whole parameters gathered
        Optimizer.ZeroGrad();
        Profiler?.Mark("optimizer");
        method.AfterStep(Model.OutputEmbedding, Vocab);                                     // mu-centering: E -> E - mu
        Model.Weights.Invalidate();                                                          // the next step casts the new weights
        Profiler?.Mark("centering");
        return (crossEntropy, gradNorm, stats, stop);
    }

    /// <summary>The head's loss of hidden [N, d] against targets [N]: the fused, chunked linear cross-entropy (matmul in
    /// Compute with the model's cached copy of E, loss in fp32), the method's hooks, the statistics when asked for.</summary>
    HeadLoss LossOf(Tensor hidden, Tensor targets, bool statistics) =>
        ChunkedHead.Loss(hidden, Model.OutputEmbedding, targets, method, Vocab, Compute, Config.Train.LossChunkTokens, statistics,
                         Model.Weights.Copy(Model.OutputEmbedding), Model.Kernels);

    /// <summary>Mean cross-entropy over the validation batches (the same batches at every evaluation); each replica
    /// evaluates its share of every batch and the means are averaged over the replicas.</summary>
    public double Evaluate()
    {
        int B = replicaBatch, T = Config.Train.SequenceLength;
        var valInputs = new int[B * T];
        var valTargets = new int[B * T];
        double sum = 0;
        Model.eval();
        using (no_grad())
        {
            for (int k = 0; k < Config.Train.EvalBatches; k++)
            {
                using var scope = NewDisposeScope();
                valBatches.Plan.FillRows(valBatches.RankRows(k, DataRank, Layout.DataParallel, 1), valInputs, valTargets);
                var hidden = Model.forward(tensor(valInputs, dtype: ScalarType.Int64, device: Device).view(B, T)).view(B * T, Model.Dim);
                sum += LossOf(hidden, tensor(valTargets, dtype: ScalarType.Int64, device: Device), statistics: false).CrossEntropy.item<float>();
            }
        }
        Model.train();
        if (comm is not null && WorldSize > 1)
        {
            using var shared = tensor(new[] { sum }, device: Device);
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
        session ??= new LocalSession(outDir, Config.Job.KeepCheckpoints, Config.ToJson(), DataCursorAt);
        bool lead = Rank == 0;
        long start = session.StartStep;
        if (session.ResumeFrom is { } from) LoadCheckpoint(from);
        if (lead)
        {
            Directory.CreateDirectory(outDir);
            AtomicFile.Write(Path.Combine(outDir, "config.json"), s => s.Write(System.Text.Encoding.UTF8.GetBytes(Config.ToJson()))); // whole or not at all
            console.WriteLine($"model: {ParameterCount:N0} parameters, vocabulary {Model.VocabSize} (padded), oec.method = {Config.Oec.Method}");
            console.WriteLine($"data: {Data.Train.Count:N0} train and {Data.Validation.Count:N0} validation sequences of {train.SequenceLength} tokens" +
                              (Data.Corpus is null ? "" : $"; the synthetic corpus's entropy rate, the best achievable loss, is {Data.Corpus.EntropyRateNats:F3} nats") +
                              (Data.Formats is null ? "" : $"; shard files: {Data.Formats}"));
            if (session.ResumeFrom is not null) console.WriteLine($"resumed from {session.ResumeFrom} at step {start}");
        }

        using var log = lead ? new MetricsLog(Path.Combine(outDir, "metrics.jsonl"), keepThrough: start) : null;
        var clock = Stopwatch.StartNew();
        // The training steps since the last logged one: a logged step reports their mean time, so that the statistics a
        // logged step computes (and warm-up after a resume) weigh as they do in the run; validation and checkpoints out.
        (double Seconds, int Steps) interval = (0, 0);
        double loss = double.NaN;
        double? valLoss = null;
        for (long step = start; step < train.Steps; step++)
        {
            bool validate = train.EvalEvery > 0 && ((step + 1) % train.EvalEvery == 0 || step == train.Steps - 1);
            bool logged = (step + 1) % train.LogEvery == 0 || validate || step == train.Steps - 1;
            var stepClock = Stopwatch.StartNew();
            var (crossEntropy, gradNorm, measured, stop) = Step(step, statistics: logged, session.StopRequested);
            interval = (interval.Seconds + stepClock.Elapsed.TotalSeconds, interval.Steps + 1);
            loss = crossEntropy;
            double? val = validate || !double.IsFinite(loss) ? Evaluate() : null;
            if (val is not null) valLoss = val;
            StepMetrics? metrics = null;
            if (logged || !double.IsFinite(loss))
            {
                var stats = measured ?? new LogitStatistics(double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
                double seconds = interval.Seconds / interval.Steps;
                interval = (0, 0);
                double tokensPerSecond = (double)train.BatchSize * train.GradAccum * train.SequenceLength / seconds;
                metrics = new StepMetrics((int)step + 1, loss, val, LearningRateAt(step), gradNorm, tokensPerSecond, seconds,
                    stats.MuNorm, stats.MeanLogit, stats.LogitStd, stats.MaxAbsLogit, stats.MeanLogZ, stats.RLog)
                {
                    MeanMuDotH = stats.MeanMuDotH, MaxMeanLogitGap = stats.MaxMeanLogitGap, REmbMean = stats.REmbMean, REmbMin = stats.REmbMin,
                    MeanMaxAbsLogit = stats.MeanMaxAbsLogit,
                };
                log?.Write(metrics);
                var eta = TimeSpan.FromSeconds(clock.Elapsed.TotalSeconds / (step + 1 - start) * (train.Steps - step - 1));
                if (lead)
                    console.WriteLine($"step {step + 1,5}/{train.Steps} | loss {loss:F4}{(val is null ? "" : $" | val {val:F4}")} | lr {LearningRateAt(step):0.0e+00} " +
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
                session.CheckpointWritten(step + 1, SaveCheckpoint(dir));
                if (lead) console.WriteLine($"checkpoint: step {step + 1} in {dir}");
            }
            if (stop && step + 1 < train.Steps) // a stop agreed at the last step finishes: the model is written below
            {
                if (lead) console.WriteLine($"stopped after step {step + 1}; the checkpoint resumes it");
                return new TrainResult((int)step + 1, loss, valLoss, Diverged: false, outDir, Stopped: true);
            }
        }
        SaveModel(Path.Combine(outDir, "model.safetensors"));
        if (lead)
        {
            console.WriteLine($"done: {train.Steps} steps in {clock.Elapsed:m\\:ss}, train loss {loss:F4}, val loss {valLoss:F4}; saved {outDir}/model.safetensors");
        }
        return new TrainResult(train.Steps, loss, valLoss, Diverged: false, outDir);
    }

    /// <summary>Where the training data stands after `step` steps (epoch, position in it), for a run without rollbacks.</summary>
    public (long Epoch, long Position) DataCursorAt(long step) => trainBatches.CursorAt(step);

    double LearningRateAt(long step) => Config.Train.LearningRateAt((int)step) * LearningRateScale;

    /// <summary>
    /// The whole model in one safetensors file, whatever the layout: with a sharded vocabulary, replica 0's shards are
    /// gathered (collective over its vocabulary group) into an unsharded model, which rank 0 writes.
    /// </summary>
    public void SaveModel(string path)
    {
        zero?.GatherBlocks(); // ZeRO-3: the blocks whole on every rank of the data group (collective)
        try { SaveWholeModel(path); }
        finally { zero?.ReleaseBlocks(); }
    }

    void SaveWholeModel(string path)
    {
        if (groups.Vocab is not { } vocabGroup)
        {
            if (Rank == 0) Checkpoint.Save(Model, Config.ToJson(), path);
            return;
        }
        if (DataRank != 0) return;
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var whole = Rank == 0 ? new Gpt(Config.Model, Config.Data.ResolvedVocabSize, Config.Train.SequenceLength) : null;
        var targets = whole?.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in Model.named_parameters())
        {
            var value = p.detach();
            if (Model.ShardedNames.Contains(name))
            {
                value = empty(Model.VocabSize, Model.Dim, device: Device); // [V, d] from tp shards of [V/tp, d], in shard order
                vocabGroup.AllGather(p.detach().contiguous(), value);
            }
            targets?[name].copy_(value);
        }
        if (whole is not null)
        {
            Checkpoint.Save(whole, Config.ToJson(), path);
            whole.Dispose();
        }
    }

    /// <summary>The model file of a checkpoint, one per vocabulary shard, and the optimizer state's: one per vocabulary
    /// shard, or with ZeRO one per rank ({stem}.zero{data rank}of{dp}), any of which a resumed job reads.</summary>
    string ModelFile => Layout.VocabParallel == 1 ? "model.safetensors" : $"model.shard{VocabRank}of{Layout.VocabParallel}.safetensors";
    string OptimizerStem => Layout.VocabParallel == 1 ? "optimizer" : $"optimizer.shard{VocabRank}of{Layout.VocabParallel}";
    string OptimizerFile => zero is null ? $"{OptimizerStem}.safetensors" : $"{OptimizerStem}.zero{DataRank}of{Layout.DataParallel}.safetensors";
    bool IsOptimizerFile(string name) =>
        name == $"{OptimizerStem}.safetensors" ||
        System.Text.RegularExpressions.Regex.IsMatch(name, $@"^{System.Text.RegularExpressions.Regex.Escape(OptimizerStem)}\.zero\d+of\d+\.safetensors$");

    /// <summary>
    /// Writes this rank's part of a checkpoint into <paramref name="dir"/>, each file whole or not at all: the ranks of
    /// replica 0 their shard of the model (safetensors, loadable from Python; the whole model when unsharded; ZeRO-3
    /// gathers it first) and, without ZeRO, of the optimizer state; with ZeRO every rank its part of the optimizer
    /// state (<see cref="OptimizerCheckpoint"/>); every rank its random generator state. Replicas are identical, so replica
    /// 0 stands for all. Returns the files for the manifest.
    /// </summary>
    public IReadOnlyList<CheckpointFile> SaveCheckpoint(string dir)
    {
        Directory.CreateDirectory(dir);
        var written = new List<string>();
        zero?.GatherBlocks();
        try
        {
            if (DataRank == 0)
            {
                written.Add(Path.Combine(dir, ModelFile));
                Checkpoint.Save(Model, Config.ToJson(), written[^1]);
            }
        }
        finally { zero?.ReleaseBlocks(); }
        if (DataRank == 0 || zero is not null)
        {
            written.Add(Path.Combine(dir, OptimizerFile));
            if (zero is not null) zero.Save(written[^1]);
            else flat!.Save(written[^1], Model.named_parameters());
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
        var manifest = CheckpointCatalog.ReadVerified(dir, f => f.Name == ModelFile || IsOptimizerFile(f.Name) || f.Name == rng);
        if (!manifest.Files.Any(f => f.Name == ModelFile))
            throw new InvalidDataException($"{dir} has no {ModelFile}: it was written with another job.vocab_parallel");
        zero?.GatherBlocks();
        Checkpoint.Load(Model, Path.Combine(dir, ModelFile));
        zero?.ReleaseBlocks(keep: true);
        Model.Weights.Invalidate();
        var optimizerFiles = manifest.Files.Where(f => IsOptimizerFile(f.Name)).Select(f => Path.Combine(dir, f.Name)).ToList();
        if (optimizerFiles.Count == 0) throw new InvalidDataException($"{dir} has no optimizer state {OptimizerStem}*.safetensors (a checkpoint of an older format, or of another job.vocab_parallel)");
        if (zero is not null) zero.Load(optimizerFiles);
        else flat!.Load(optimizerFiles, Model.named_parameters());
        if (manifest.Files.Any(f => f.Name == rng))
        {
            using var state = tensor(File.ReadAllBytes(Path.Combine(dir, rng)), dtype: ScalarType.Byte);
            random.set_rng_state(state);
        }
    }

    public void Dispose()
    {
        gradients?.Dispose(); // ZeRO's optimizer too
        groups.Dispose();
        flat?.Dispose();
        Model.Dispose();
        Data.Dispose();
    }
}
