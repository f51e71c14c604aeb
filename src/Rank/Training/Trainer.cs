// One process's training loop: the step, validation, the metrics log and the final checkpoint.
using System.Diagnostics;
using Data;
using Oec;
using Rank.Configuration;
using Rank.Model;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.Training;

public sealed record TrainResult(int Steps, double FinalTrainLoss, double? FinalValLoss, bool Diverged, string OutDir);

public sealed class Trainer : IDisposable
{
    public RunConfig Config { get; }
    public Gpt Model { get; }
    public IVocabularyReduction Vocab { get; }
    readonly OptimizerHelper optimizer;
    readonly List<Parameter> parameters;
    readonly BatchPlan trainBatches, valBatches;
    readonly int[] inputs, targets; // one step's global batch [B * accum, T], row-major
    readonly List<IDisposable> sources = new();
    SyntheticCorpus? corpus; // the data when data.source = synthetic

    public Trainer(RunConfig config)
    {
        TorchRuntime.EnsureLoaded();
        Config = config.Validated();
        var (model, data, train) = (Config.Model, Config.Data, Config.Train);
        if (train.Threads > 0) set_num_threads(train.Threads);

        manual_seed((long)(train.Seed % long.MaxValue));
        Model = new Gpt(model, data.ResolvedVocabSize, train.SequenceLength);
        Vocab = new LocalVocabulary(Model.VocabSize);
        parameters = Model.parameters().ToList();
        // Weight decay on matrices and embeddings only, not on LayerNorm weights (as nanoGPT and the paper's code).
        optimizer = optim.AdamW(new[]
        {
            new AdamW.ParamGroup(parameters.Where(p => p.dim() >= 2), train.LearningRate, train.Beta1, train.Beta2, train.Eps, train.WeightDecay, false, false),
            new AdamW.ParamGroup(parameters.Where(p => p.dim() < 2), train.LearningRate, train.Beta1, train.Beta2, train.Eps, 0, false, false),
        }, train.LearningRate, train.Beta1, train.Beta2, train.Eps, train.WeightDecay);

        var (trainSources, valSources) = OpenData(data);
        trainBatches = new BatchPlan(new SequencePlan(trainSources, train.SequenceLength), train.BatchSize * train.GradAccum, train.Seed);
        valBatches = new BatchPlan(new SequencePlan(valSources, train.SequenceLength), train.BatchSize, seed: 0);
        inputs = new int[train.BatchSize * train.GradAccum * train.SequenceLength];
        targets = new int[inputs.Length];
    }

    /// <summary>
    /// One optimizer step, top to bottom: learning rate, then per micro-batch forward, loss with the regulariser,
    /// backward; then clip, optimizer step, zero grad, mu-centering. Statistics, when asked for (they cost a few passes
    /// over the logits), describe this step's forward pass of the last micro-batch; otherwise they are null.
    /// </summary>
    public (double CrossEntropy, double GradNorm, LogitStatistics? Stats) Step(int step, bool statistics = true)
    {
        var train = Config.Train;
        int B = train.BatchSize, T = train.SequenceLength, accum = train.GradAccum;
        foreach (var group in optimizer.ParamGroups) group.LearningRate = train.LearningRateAt(step);

        trainBatches.Fill(step, inputs, targets);
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
            (loss.Loss / accum).backward();                                                  // mean over the global batch
            crossEntropy += loss.CrossEntropy.item<float>() / accum;
            if (statistics && micro == accum - 1) stats = LogitStatistics.Compute(logits, Model.OutputEmbedding, Vocab);
        }

        double gradNorm = train.GradClip > 0
            ? nn.utils.clip_grad_norm_(parameters, train.GradClip)
            : nn.utils.clip_grad_norm_(parameters, double.PositiveInfinity);
        optimizer.step();
        optimizer.zero_grad();
        if (Config.Oec.Method == OecMethod.MuCentering) OutputEmbedding.Center(Model.OutputEmbedding, Vocab);
        return (crossEntropy, gradNorm, stats);
    }

    /// <summary>Mean cross-entropy over the validation batches (the same batches at every evaluation).</summary>
    public double Evaluate()
    {
        int B = Config.Train.BatchSize, T = Config.Train.SequenceLength;
        var valInputs = new int[B * T];
        var valTargets = new int[B * T];
        double sum = 0;
        Model.eval();
        using (no_grad())
        {
            for (int k = 0; k < Config.Train.EvalBatches; k++)
            {
                using var scope = NewDisposeScope();
                valBatches.Fill(k, valInputs, valTargets);
                var hidden = Model.forward(tensor(valInputs, dtype: ScalarType.Int64).view(B, T)).view(B * T, Model.Dim);
                var logits = OutputEmbedding.Logits(hidden, Model.OutputEmbedding, Config.Oec);
                var loss = OutputEmbedding.Loss(logits, tensor(valTargets, dtype: ScalarType.Int64), Model.OutputEmbedding, Config.Oec, Vocab);
                sum += loss.CrossEntropy.item<float>();
            }
        }
        Model.train();
        return sum / Config.Train.EvalBatches;
    }

    /// <summary>The whole run: steps, validation, metrics.jsonl, progress on the console, model.safetensors.</summary>
    public TrainResult Run(TextWriter console)
    {
        var train = Config.Train;
        string outDir = Config.Run.OutDir;
        Directory.CreateDirectory(outDir);
        File.WriteAllText(Path.Combine(outDir, "config.json"), Config.ToJson());
        console.WriteLine($"model: {Model.parameters().Sum(p => p.numel()):N0} parameters, vocabulary {Model.VocabSize} (padded), oec.method = {Config.Oec.Method}");
        console.WriteLine($"data: {trainBatches.Plan.Count:N0} train and {valBatches.Plan.Count:N0} validation sequences of {train.SequenceLength} tokens" +
                          (corpus is null ? "" : $"; the synthetic corpus's entropy rate, the best achievable loss, is {corpus.EntropyRateNats:F3} nats"));

        using var log = new MetricsLog(Path.Combine(outDir, "metrics.jsonl"));
        var clock = Stopwatch.StartNew();
        double loss = double.NaN;
        double? valLoss = null;
        int step = 0;
        for (; step < train.Steps; step++)
        {
            bool validate = train.EvalEvery > 0 && ((step + 1) % train.EvalEvery == 0 || step == train.Steps - 1);
            bool logged = (step + 1) % train.LogEvery == 0 || validate || step == train.Steps - 1;
            var stepClock = Stopwatch.StartNew();
            var (crossEntropy, gradNorm, measured) = Step(step, statistics: logged);
            double seconds = stepClock.Elapsed.TotalSeconds;
            loss = crossEntropy;
            double? val = validate || !double.IsFinite(loss) ? Evaluate() : null;
            if (val is not null) valLoss = val;
            if (logged || !double.IsFinite(loss))
            {
                var stats = measured ?? new LogitStatistics(double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
                double tokensPerSecond = (double)train.BatchSize * train.GradAccum * train.SequenceLength / seconds;
                log.Write(new StepMetrics(step + 1, loss, val, train.LearningRateAt(step), gradNorm, tokensPerSecond, seconds,
                    stats.MuNorm, stats.MeanLogit, stats.LogitStd, stats.MaxAbsLogit, stats.MeanLogZ, stats.RLog));
                var eta = TimeSpan.FromSeconds(clock.Elapsed.TotalSeconds / (step + 1) * (train.Steps - step - 1));
                console.WriteLine($"step {step + 1,5}/{train.Steps} | loss {loss:F4}{(val is null ? "" : $" | val {val:F4}")} | lr {train.LearningRateAt(step):0.0e+00} " +
                                  $"| grad {gradNorm:F2} | |mu| {stats.MuNorm:F4} | max|logit| {stats.MaxAbsLogit:F2} | {tokensPerSecond / 1000:F1}k tok/s | eta {eta:m\\:ss}");
            }
            if (!double.IsFinite(loss))
            {
                console.WriteLine($"diverged: the training loss is {loss} at step {step + 1}; stopping (metrics kept in {outDir}/metrics.jsonl)");
                return new TrainResult(step + 1, loss, valLoss, Diverged: true, outDir);
            }
        }
        Checkpoint.Save(Model, Config.ToJson(), Path.Combine(outDir, "model.safetensors"));
        console.WriteLine($"done: {train.Steps} steps in {clock.Elapsed:m\\:ss}, train loss {loss:F4}, val loss {valLoss:F4}; saved {outDir}/model.safetensors");
        return new TrainResult(train.Steps, loss, valLoss, Diverged: false, outDir);
    }

    (List<ITokenSource> Train, List<ITokenSource> Val) OpenData(DataOptions data)
    {
        int vocab = data.ResolvedVocabSize;
        if (data.Source == "shards")
        {
            var trainShards = TokenShard.OpenShards(data.TrainShards!, vocab);
            var valShards = TokenShard.OpenShards(data.ValShards!, vocab);
            sources.AddRange(trainShards);
            sources.AddRange(valShards);
            return (trainShards.Cast<ITokenSource>().ToList(), valShards.Cast<ITokenSource>().ToList());
        }
        corpus = new SyntheticCorpus(vocab, data.SyntheticTokens, data.SyntheticSeed);
        long valTokens = Math.Max(Config.Train.SequenceLength + 1, (long)(data.SyntheticTokens * data.ValFraction));
        return ([new TokenSlice(corpus, 0, corpus.TokenCount - valTokens, "synthetic/train")],
                [new TokenSlice(corpus, corpus.TokenCount - valTokens, valTokens, "synthetic/val")]);
    }

    public void Dispose()
    {
        optimizer.Dispose();
        Model.Dispose();
        foreach (var s in sources) s.Dispose();
    }
}
