// The fused, chunked head (Oec.ChunkedHead) against the unchunked one: on a sharded vocabulary (2 ranks as threads),
// through the model (every parameter's gradient, tied and untied), and in the trainer (losses and parameters).
using Oec;
using Rank.Model;
using Rank.Parallel;
using Rank.Training;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class ChunkedHeadTests(ITestOutputHelper log)
{
    const int N = 24, H = 16, V = 64, Chunk = 7; // chunks of 7, 7, 7, 3 tokens: the last one ragged

    static IOecMethod Method(OecMethod method) =>
        new OecOptions { Method = method, MuLossLambda = 0.1, ZLossLambda = 0.01, SoftCap = 2 }.Resolve();

    // fp32: only the order of summation differs (over chunks, over shards), 1e-5 of each tensor's scale (as
    // ShardedVocabularyTests). bf16: E's gradient is a sum of per-chunk products each rounded to bf16 (2^-9 relative),
    // where the unchunked backward rounds the whole product once, and a rounding flipped by that propagates through the
    // model's bf16 backward: 1e-2 of the scale.
    static double Tolerance(bool bf16) => bf16 ? 1e-2 : 1e-5;

    void Same(string what, double[] expected, double[] actual, double tolerance)
    {
        double scale = expected.Max(Math.Abs), largest = expected.Zip(actual, (e, a) => Math.Abs(e - a)).DefaultIfEmpty().Max();
        log.WriteLine($"  {what}: largest |difference| {largest:G3} (scale {scale:G3})");
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= tolerance * (Math.Abs(expected[i]) + scale),
                $"{what}, element {i}: expected {expected[i]:R}, got {actual[i]:R} (scale {scale:G3})");
    }

    public static TheoryData<OecMethod, bool> MethodsAndPrecisions()
    {
        var data = new TheoryData<OecMethod, bool>();
        foreach (var method in Enum.GetValues<OecMethod>())
            foreach (var bf16 in new[] { false, true }) data.Add(method, bf16);
        return data;
    }

    static double[] Fields(LogitStatistics s) => [s.MeanLogit, s.LogitStd, s.MaxAbsLogit, s.MuNorm, s.MeanLogZ, s.RLog];

    [Theory]
    [MemberData(nameof(MethodsAndPrecisions))]
    public void On_a_vocabulary_sharded_over_2_ranks_the_chunked_head_equals_the_unsharded_unchunked_one(OecMethod method, bool bf16)
    {
        var compute = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        manual_seed(20261204);
        var (hidden, weight, targets) = (randn(N, H), randn(V, H) + 0.3, randint(0, V, [N], dtype: ScalarType.Int64));
        var (h, e) = (hidden.clone().requires_grad_(), weight.clone().requires_grad_());
        var whole = new LocalVocabulary(V);
        var logits = OutputEmbedding.Logits(h, e, Method(method), whole, compute);
        var expected = OutputEmbedding.Loss(logits, targets, e, Method(method), whole);
        expected.Loss.backward();
        var expectedStatistics = LogitStatistics.Compute(logits, e, whole);

        const int tp = 2, rows = V / tp;
        var hiddens = Enumerable.Range(0, tp).Select(_ => hidden.clone().requires_grad_()).ToArray();
        var shards = Enumerable.Range(0, tp).Select(r => weight.narrow(0, r * rows, rows).clone().requires_grad_()).ToArray();
        var ranks = ShardedVocabularyTests.RunRanks(tp, (rank, group) =>
        {
            var loss = ChunkedHead.Loss(hiddens[rank], shards[rank], targets, Method(method), new ShardedVocabulary(group, V), compute, Chunk, statistics: true);
            loss.Loss.backward();
            return (Loss: loss.Loss.item<float>(), CrossEntropy: loss.CrossEntropy.item<float>(), loss.Statistics);
        });

        log.WriteLine($"{method}, {compute}:");
        for (int r = 0; r < tp; r++)
        {
            Same("loss", [expected.Loss.item<float>()], [ranks[r].Loss], 1e-5);
            Same("cross-entropy", [expected.CrossEntropy.item<float>()], [ranks[r].CrossEntropy], 1e-5);
            // bf16: each shard rounds its part of dL/dhidden (a half vocabulary's product) to bf16 before the all-reduce adds them
            Same("hidden.grad", Tensors.Values(h.grad!), Tensors.Values(hiddens[r].grad!), Tolerance(bf16));
            Same("E_r.grad", Tensors.Values(e.grad!.narrow(0, r * rows, rows)), Tensors.Values(shards[r].grad!), Tolerance(bf16));
            Same("statistics", Fields(expectedStatistics), Fields(ranks[r].Statistics!), 1e-5);
        }
    }

    public static TheoryData<OecMethod, bool, bool> MethodsPrecisionsAndTying()
    {
        var data = new TheoryData<OecMethod, bool, bool>();
        foreach (var method in Enum.GetValues<OecMethod>())
            foreach (var bf16 in new[] { false, true })
                foreach (var tying in new[] { false, true }) data.Add(method, bf16, tying);
        return data;
    }

    /// <summary>Every parameter's gradient of a tiny model from one forward and backward with the given head.</summary>
    static Dictionary<string, double[]> Gradients(ScalarType compute, bool tying, Func<Gpt, Tensor, Tensor> head)
    {
        using var model = new Gpt(new ModelOptions { Preset = "tiny", WeightTying = tying }, vocabSize: 128, maxSequenceLength: 16, seed: 7, compute: compute);
        manual_seed(8);
        var x = randint(0, 128, [2, 16], dtype: ScalarType.Int64);
        head(model, model.forward(x).view(32, model.Dim)).backward();
        return model.named_parameters().ToDictionary(p => p.name, p => Tensors.Values(p.parameter.grad!));
    }

    [Theory]
    [MemberData(nameof(MethodsPrecisionsAndTying))]
    public void Through_the_model_every_parameter_gets_the_gradient_of_the_unchunked_head(OecMethod method, bool bf16, bool tying)
    {
        var compute = bf16 ? ScalarType.BFloat16 : ScalarType.Float32;
        manual_seed(9);
        var targets = randint(0, 128, [32], dtype: ScalarType.Int64);
        var vocab = new LocalVocabulary(128);
        var expected = Gradients(compute, tying, (model, hidden) =>
            OutputEmbedding.Loss(OutputEmbedding.Logits(hidden, model.OutputEmbedding, Method(method), vocab, compute), targets, model.OutputEmbedding, Method(method), vocab).Loss);
        var actual = Gradients(compute, tying, (model, hidden) =>
            ChunkedHead.Loss(hidden, model.OutputEmbedding, targets, Method(method), vocab, compute, Chunk, computeWeight: model.Weights.Copy(model.OutputEmbedding)).Loss);

        log.WriteLine($"{method}, {compute}, tying {tying}:");
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, grad) in expected) Same(name, grad, actual[name], Tolerance(bf16));
    }

    [Theory]
    [InlineData(OecMethod.MuLoss, true)]
    [InlineData(OecMethod.ZLoss, false)]
    public void Trained_on_2_vocabulary_shards_with_ragged_chunks_the_losses_and_parameters_are_those_of_one_unchunked_process(OecMethod method, bool tying)
    {
        using var temp = new TempDirectory();
        var config = (TestConfigs.Tiny(temp.Path, steps: 10, method: method).WithOec(o => o with { MuLossLambda = 1e-1, ZLossLambda = 1e-2 })
            with { Model = new ModelOptions { WeightTying = tying } }).Validated();
        using var single = new Trainer(config);
        var reference = Enumerable.Range(0, 10).Select(s => single.Step(s).CrossEntropy).ToArray();
        var expected = Tensors.Parameters(single.Model);

        var (losses, trainers) = VocabParallelTests.RunLayout(config.WithTrain(t => t with { LossChunkTokens = 100 }), 1, 2); // 256 tokens: 100, 100, 56
        try
        {
            double lossError = Enumerable.Range(0, 10).SelectMany(s => losses.Select(l => Math.Abs(l[s] - reference[s]))).Max();
            var actual = VocabParallelTests.WholeParameters(trainers, 2);
            var differences = expected.SelectMany(kv => kv.Value.Zip(actual[kv.Key], (a, b) => Math.Abs(a - b))).Order().ToArray();
            log.WriteLine($"{method}, tying {tying}: largest loss difference {lossError:G3}; parameters largest {differences[^1]:G3}, 99.9th percentile {differences[(int)(0.999 * (differences.Length - 1))]:G3}");
            // As VocabParallelTests: AdamW amplifies the rounding of gradients near eps in a few elements.
            Assert.True(lossError < 1e-5, $"the losses differ from one process by up to {lossError}");
            Assert.True(differences[^1] < 1e-3, $"the parameters differ from one process by up to {differences[^1]}");
            Assert.True(differences[(int)(0.999 * (differences.Length - 1))] < 1e-5, "0.1% of the parameters differ from one process by more than 1e-5");
        }
        finally
        {
            foreach (var t in trainers) t?.Dispose();
        }
    }
}
