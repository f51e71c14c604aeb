// The vocabulary-sharded head against the unsharded one: loss, gradients, mu, mu-loss, centering and statistics
// for every OEC method at tp 2 and 4 (ranks are threads joined by a TCP ring), and bitwise at tp 1.
using Collectives;
using Oec;
using Rank.Parallel;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class ShardedVocabularyTests(ITestOutputHelper log)
{
    const int N = 24, H = 16, V = 64;
    const int Tokens = 59; // the last rows are padding: r_emb leaves them out, on each shard by its global rows
    const double Tolerance = 1e-5; // relative to each value and to the scale (largest magnitude) of its tensor
    static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);

    // Every shard boundary of tp 2 and 4 (0, 15|16, 31|32, 47|48, 63), and 6 targets in each quarter of the vocabulary.
    static readonly long[] Targets = [0, 63, 15, 16, 31, 32, 47, 48, 5, 9, 21, 27, 36, 40, 52, 58, 3, 18, 44, 61, 12, 29, 33, 50];

    // Strong regularisers, so that their share of the loss and of the gradients is far above the tolerance.
    static OecOptions Options(OecMethod method) => new() { Method = method, MuLossLambda = 0.1, ZLossLambda = 0.01, SoftCap = 2 };

    /// <summary>hidden [N, H] and E [V, H] with mean 0.3 (so mu and mu-loss are far from 0), fp32, from a fixed seed.</summary>
    static (Tensor Hidden, Tensor Weight) Data()
    {
        manual_seed(20261128);
        return (randn(N, H), randn(V, H) + 0.3);
    }

    /// <summary>What one head (the whole one, or one rank's shard) computes; weight values are this rank's rows.</summary>
    sealed record HeadResult(
        double Loss, double CrossEntropy, double[] HiddenGrad, double[] WeightGrad, double[] Mu, double MuLoss,
        double NormBeforeCentering, double[] Centered, double NormAfterCentering, LogitStatistics Statistics);

    /// <summary>The head's forward and backward from leaves <paramref name="hidden"/> and <paramref name="weight"/>,
    /// then mu, mu-loss, the statistics, and mu-centering of a fresh copy of the weight.</summary>
    static HeadResult RunHead(Tensor hidden, Tensor weight, Tensor targets, OecOptions options, IVocabularyReduction vocab)
    {
        var method = options.Resolve();
        var logits = OutputEmbedding.Logits(hidden, weight, method, vocab);
        var loss = OutputEmbedding.Loss(logits, targets, weight, method, vocab);
        loss.Loss.backward();
        var statistics = LogitStatistics.Compute(logits, weight, vocab, hidden);
        var mu = OutputEmbedding.Mu(weight, vocab);
        var muLoss = OutputEmbedding.MuLoss(weight, vocab, options.MuLossLambda);
        var centered = weight.detach().clone().requires_grad_(); // a fresh parameter, as the optimizer step leaves it
        double before, after;
        using (no_grad())
        {
            before = OutputEmbedding.Center(centered, vocab).item<float>();
            after = OutputEmbedding.Mu(centered, vocab).norm().item<float>();
        }
        return new HeadResult(
            Scalar(loss.Loss), Scalar(loss.CrossEntropy),
            Tensors.Values(hidden.grad!), Tensors.Values(weight.grad!),
            Tensors.Values(mu), Scalar(muLoss),
            before, Tensors.Values(centered), after, statistics);
    }

    static double Scalar(Tensor t) => t.detach().cpu().to_type(ScalarType.Float64).item<double>();

    static HeadResult Reference(Tensor hidden, Tensor weight, OecOptions options) =>
        RunHead(hidden.clone().requires_grad_(), weight.clone().requires_grad_(), tensor(Targets), options, new LocalVocabulary(V, Tokens));

    /// <summary>Runs body(rank, group) on tp threads, each with its own TcpRingCommunicator; throws what any rank threw.</summary>
    internal static T[] RunRanks<T>(int tp, Func<int, ICommunicator, T> body)
    {
        var rendezvous = new InProcessRendezvous();
        var ring = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(30));
        var key = "sharded-vocabulary-" + Guid.NewGuid().ToString("N");
        var results = new T[tp];
        var errors = new Exception?[tp];
        var threads = Enumerable.Range(0, tp).Select(rank => new Thread(() =>
        {
            try
            {
                using var group = TcpRingCommunicator.Create(rendezvous, key, rank, tp, ring);
                results[rank] = body(rank, group);
            }
            catch (Exception e)
            {
                errors[rank] = e;
            }
        }) { IsBackground = true }).ToArray();
        foreach (var t in threads) t.Start();
        var deadline = DateTime.UtcNow + Guard;
        foreach (var t in threads)
        {
            var left = deadline - DateTime.UtcNow;
            Assert.True(t.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero), $"a rank of tp {tp} did not finish within {Guard.TotalSeconds} s");
        }
        var failed = errors.Select((e, r) => (e, r)).Where(x => x.e is not null).ToArray();
        if (failed.Length > 0)
            throw new AggregateException($"ranks [{string.Join(", ", failed.Select(f => f.r))}] of tp {tp} failed", failed.Select(f => f.e!));
        return results;
    }

    /// <summary>Every rank's result, each from its own leaves: the same hidden states, and its rows of E.</summary>
    static HeadResult[] Sharded(Tensor hidden, Tensor weight, OecOptions options, int tp)
    {
        long rows = V / tp;
        var hiddens = Enumerable.Range(0, tp).Select(_ => hidden.clone().requires_grad_()).ToArray();
        var shards = Enumerable.Range(0, tp).Select(r => weight.narrow(0, r * rows, rows).clone().requires_grad_()).ToArray();
        return RunRanks(tp, (rank, group) =>
        {
            var vocab = new ShardedVocabulary(group, V, Tokens);
            if (vocab.Offset != rank * rows || vocab.Rows != rows || vocab.Parts != tp || vocab.VocabSize != V)
                throw new InvalidOperationException($"rank {rank} of {tp}: offset {vocab.Offset}, rows {vocab.Rows}, parts {vocab.Parts}, V {vocab.VocabSize}");
            return RunHead(hiddens[rank], shards[rank], tensor(Targets), options, vocab);
        });
    }

    /// <summary>Asserts |actual - expected| &lt;= Tolerance (|expected| + scale) element-wise; logs and returns the largest |difference|.</summary>
    double Same(string what, IReadOnlyList<double> expected, IReadOnlyList<double> actual, double? scale = null)
    {
        Assert.Equal(expected.Count, actual.Count);
        double s = scale ?? expected.Max(Math.Abs);
        double largest = 0;
        int at = 0;
        for (int i = 0; i < expected.Count; i++)
        {
            double d = Math.Abs(actual[i] - expected[i]);
            if (!(d <= largest)) (largest, at) = (d, i);
        }
        log.WriteLine($"  {what}: largest |difference| {largest:G3} (element {at}, scale {s:G3})");
        for (int i = 0; i < expected.Count; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= Tolerance * (Math.Abs(expected[i]) + s),
                $"{what}, element {i}: expected {expected[i]:R}, got {actual[i]:R} (scale {s:G3})");
        return largest;
    }

    double Same(string what, double expected, double actual) => Same(what, [expected], [actual]);

    static double[] Fields(LogitStatistics s) => [s.MeanLogit, s.LogitStd, s.MaxAbsLogit, s.MuNorm, s.MeanLogZ, s.RLog, s.MeanMuDotH, s.REmbMean, s.REmbMin, s.MeanMaxAbsLogit];
    static readonly string[] FieldNames = ["MeanLogit", "LogitStd", "MaxAbsLogit", "MuNorm", "MeanLogZ", "RLog", "MeanMuDotH", "REmbMean", "REmbMin", "MeanMaxAbsLogit"];

    public static TheoryData<int, OecMethod> Layouts()
    {
        var data = new TheoryData<int, OecMethod>();
        foreach (var tp in new[] { 2, 4 })
            foreach (var method in Enum.GetValues<OecMethod>())
                data.Add(tp, method);
        return data;
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void The_sharded_head_equals_the_unsharded_computation(int tp, OecMethod method)
    {
        var options = Options(method);
        var (hidden, weight) = Data();
        long rows = V / tp;
        Assert.All(Enumerable.Range(0, tp), r => Assert.True(Targets.Count(t => t / rows == r) >= 3, $"shard {r} of {tp} has fewer than 3 targets"));

        var expected = Reference(hidden, weight, options);
        var ranks = Sharded(hidden, weight, options, tp);

        log.WriteLine($"{method}, tp {tp}: loss {expected.Loss:G6}, cross-entropy {expected.CrossEntropy:G6}, ||mu|| {expected.NormBeforeCentering:G4}, mu-loss {expected.MuLoss:G4}");
        double gradScale = expected.WeightGrad.Max(Math.Abs);
        for (int r = 0; r < tp; r++)
        {
            var actual = ranks[r];
            log.WriteLine($" rank {r}:");
            // 1. the loss and the cross-entropy
            Same("loss", expected.Loss, actual.Loss);
            Same("cross-entropy", expected.CrossEntropy, actual.CrossEntropy);
            // 2. the hidden states' gradient, whole on every rank (Share's backward all-reduce)
            Same("hidden.grad", expected.HiddenGrad, actual.HiddenGrad);
            // 3. the shard's gradient: rows [r V/tp, (r + 1) V/tp) of the whole E's gradient
            Same("E_r.grad", expected.WeightGrad.Skip((int)(r * rows * H)).Take((int)(rows * H)).ToArray(), actual.WeightGrad, gradScale);
            // 4. mu and mu-loss, global on every rank
            Same("mu", expected.Mu, actual.Mu);
            Same("mu-loss", expected.MuLoss, actual.MuLoss);
            // 5. mu-centering: the norm it reports, and ||mu|| after it
            Same("||mu|| before centering", expected.NormBeforeCentering, actual.NormBeforeCentering);
            Assert.True(actual.NormAfterCentering < 1e-5, $"rank {r}: ||mu|| = {actual.NormAfterCentering} after centering");
            // 6. the logit statistics, every field
            var (e, a) = (Fields(expected.Statistics), Fields(actual.Statistics));
            for (int f = 0; f < e.Length; f++) Same($"statistics.{FieldNames[f]}", e[f], a[f]);
        }
        // 5. the centered shards side by side are the centered whole E
        Assert.True(expected.NormAfterCentering < 1e-5, $"unsharded: ||mu|| = {expected.NormAfterCentering} after centering");
        Same("centered E (shards concatenated)", expected.Centered, ranks.SelectMany(x => x.Centered).ToArray());
        log.WriteLine($" ||mu|| after centering: unsharded {expected.NormAfterCentering:G3}, sharded up to {ranks.Max(x => x.NormAfterCentering):G3}");

        // The regulariser is strong enough to matter: its share of the loss and of E's gradient is far above the tolerance.
        if (method is OecMethod.ZLoss or OecMethod.MuLoss or OecMethod.SoftCap)
        {
            var plain = Reference(hidden, weight, Options(OecMethod.None));
            double gradEffect = plain.WeightGrad.Zip(expected.WeightGrad, (p, x) => Math.Abs(p - x)).Max() / gradScale;
            log.WriteLine($" the regulariser changes the loss by {expected.Loss - plain.CrossEntropy:G3} and E.grad by up to {gradEffect:G3} of its scale");
            Assert.True(gradEffect > 1000 * Tolerance, $"{method}: the regulariser changes E.grad by only {gradEffect} of its scale");
            if (method != OecMethod.SoftCap) Assert.True(expected.Loss - expected.CrossEntropy > 1e-2, $"{method}: regulariser {expected.Loss - expected.CrossEntropy}");
        }
    }

    // At tp 1 every all-reduce is a no-op, and the forward values are bitwise those of LocalVocabulary (torch's logsumexp
    // is also log(sum exp(l - max)) + max). The gradients are not: torch's logsumexp backward is g exp(l - log Z), while
    // autograd through max + log(sum exp(l - max)) gives (g / sum) exp(l - max), which rounds differently in fp32 (seen:
    // about half the elements differ, by up to 4e-7 of the gradient's scale, i.e. a few ulps). Replacing the sharded
    // log Z by logits.logsumexp(-1) at tp 1 makes them bitwise too; that is a rounding difference, not an error.
    const double GradientRounding = 16 * 1.1920929e-7; // 16 fp32 epsilons of the gradient's scale

    public static TheoryData<OecMethod> Methods()
    {
        var data = new TheoryData<OecMethod>();
        foreach (var method in Enum.GetValues<OecMethod>()) data.Add(method);
        return data;
    }

    [Theory]
    [MemberData(nameof(Methods))]
    public void A_group_of_one_gives_bitwise_the_unsharded_values_and_the_gradients_to_fp32_rounding(OecMethod method)
    {
        var options = Options(method);
        var (hidden, weight) = Data();

        var expected = Reference(hidden, weight, options);
        var actual = Sharded(hidden, weight, options, tp: 1).Single();

        Assert.Equal(expected.Loss, actual.Loss);
        Assert.Equal(expected.CrossEntropy, actual.CrossEntropy);
        Assert.Equal(expected.Mu, actual.Mu);
        Assert.Equal(expected.MuLoss, actual.MuLoss);
        Assert.Equal(expected.NormBeforeCentering, actual.NormBeforeCentering);
        Assert.Equal(expected.Centered, actual.Centered);
        Assert.Equal(expected.NormAfterCentering, actual.NormAfterCentering);
        Assert.Equal(Fields(expected.Statistics), Fields(actual.Statistics));
        foreach (var (what, e, a) in new[] { ("hidden.grad", expected.HiddenGrad, actual.HiddenGrad), ("E.grad", expected.WeightGrad, actual.WeightGrad) })
        {
            double scale = e.Max(Math.Abs), largest = e.Zip(a, (x, y) => Math.Abs(x - y)).Max();
            log.WriteLine($"{method}, tp 1: {what}: {e.Zip(a).Count(p => p.First != p.Second)} of {e.Length} elements differ, by up to {largest:G3} ({largest / scale:G3} of its scale {scale:G3})");
            Assert.True(largest <= GradientRounding * scale, $"{what}: differs from LocalVocabulary's by {largest} > {GradientRounding} x scale {scale}");
        }
    }

    /// <summary>A group that only knows its rank and size; the constructor needs no collective.</summary>
    internal sealed class GroupOf(int rank, int worldSize) : ICommunicator
    {
        public int Rank => rank;
        public int WorldSize => worldSize;
        public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum) => throw new NotSupportedException();
        public void Broadcast(Tensor tensor, int root) => throw new NotSupportedException();
        public void AllGather(Tensor input, Tensor output) => throw new NotSupportedException();
        public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum) => throw new NotSupportedException();
        public void Barrier() => throw new NotSupportedException();
        public ICommunicator Split(int color, int key) => throw new NotSupportedException();
        public void Dispose() { }
    }

    [Theory]
    [InlineData(65L, 2)]
    [InlineData(50L, 4)]
    [InlineData(3L, 4)]
    [InlineData(50257L, 8)]
    public void A_vocabulary_not_divisible_by_the_group_size_is_rejected_naming_both(long vocabSize, int tp)
    {
        var e = Assert.Throws<ArgumentException>(() => new ShardedVocabulary(new GroupOf(0, tp), vocabSize));

        Assert.Contains(vocabSize.ToString(), e.Message);
        Assert.Contains(tp.ToString(), e.Message);
    }

    [Theory]
    [InlineData(64L, 1)]
    [InlineData(64L, 2)]
    [InlineData(64L, 4)]
    [InlineData(50304L, 8)]
    public void Rank_r_holds_rows_r_V_over_tp_to_r_plus_1_V_over_tp(long vocabSize, int tp)
    {
        for (int r = 0; r < tp; r++)
        {
            var shard = new ShardedVocabulary(new GroupOf(r, tp), vocabSize);

            Assert.Equal(vocabSize / tp, shard.Rows);
            Assert.Equal(r * vocabSize / tp, shard.Offset);
            Assert.Equal(tp, shard.Parts);
            Assert.Equal(vocabSize, shard.VocabSize);
        }
    }
}
