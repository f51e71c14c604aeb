// The cross-entropy part of the fused linear cross-entropy, per chunk of fp32 logits: the loss terms, the logit
// statistics and dL/dlogits, by the TorchSharp ops with autograd (the reference) or by one kernel (cross_entropy.cu).
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels.Ops;

/// <summary>The transform and token penalty that the kernel computes itself over a whole (unsharded) vocabulary:
/// soft-capping c * tanh(l / c) when <paramref name="SoftCap"/> is set, and the z-loss penalty lambda * (log Z)^2 per
/// token when <paramref name="ZLossLambda"/> is set; neither: the logits as they are and no penalty.</summary>
public sealed record CrossEntropyForm(double? SoftCap = null, double? ZLossLambda = null);

/// <summary>
/// How the reference computes a chunk's loss: the method's transform of the logits [n, V_local] -> [n, V_local] and
/// token penalty log Z [n] -> [n] (null: none), the vocabulary's reductions (a sharded vocabulary all-reduces them), V
/// (all rows, for the means), and the <see cref="CrossEntropyForm"/> that computes the same where there is one (null:
/// the reference always runs, e.g. for a sharded vocabulary or a method whose hooks the kernel does not know).
/// </summary>
public sealed record CrossEntropyHooks(
    Func<Tensor, Tensor> Transform, Func<Tensor, Tensor?> Penalty,
    Func<Tensor, Tensor> LogSumExp, Func<Tensor, Tensor, Tensor> TargetLogit, Func<Tensor, long, Tensor> Sum, Func<Tensor, Tensor> Max,
    long VocabSize, CrossEntropyForm? Form)
{
    /// <summary>The hooks of <paramref name="form"/> over a whole vocabulary of <paramref name="vocabSize"/> rows, as the
    /// methods and the unsharded vocabulary define them (Oec.OutputEmbedding.SoftCap and ZLossPerToken,
    /// Oec.LocalVocabulary); Oec's tests hold them to be bitwise those.</summary>
    public static CrossEntropyHooks Local(long vocabSize, CrossEntropyForm form) => new(
        form.SoftCap is { } cap ? l => (l / cap).tanh() * cap : l => l,
        form.ZLossLambda is { } lambda ? logZ => lambda * logZ.square() : _ => null,
        l => l.logsumexp(-1), (l, t) => l.gather(-1, t.unsqueeze(-1)).squeeze(-1), (x, dim) => x.sum(dim), x => x.amax(-1),
        vocabSize, form);
}

/// <summary>The paper's per-token logit statistics of a chunk (Oec.LogitStatistics sums them over the tokens), each
/// [n] fp32, of the transformed logits x: the mean over the vocabulary, the standard deviation (two-pass), max |x| and
/// r_log = max |x - mean| / max |x|.</summary>
public sealed record LogitRows(Tensor Mean, Tensor Std, Tensor MaxAbs, Tensor RLog);

/// <summary>What a chunk's rows yield, each [n] fp32 without gradient: each token's cross-entropy log Z - x_target
/// (nats), its penalty (null without one), log Z, the statistics (null when not asked for), and d(token loss / N)/d
/// logits [n, V_local] fp32 when asked for (the fused path writes it over the logits).</summary>
public sealed record CrossEntropyRows(Tensor CrossEntropy, Tensor? Penalty, Tensor LogZ, LogitRows? Statistics, Tensor? Gradient);

public static class CrossEntropyOp
{
    /// <summary>
    /// One chunk: logits [n, V_local] fp32 (before the transform), targets [n] int64 in [0, V_local), total = N, the
    /// tokens whose mean is the loss. The kernel runs where <paramref name="kernels"/> is given, the hooks have a
    /// <see cref="CrossEntropyHooks.Form"/>, and logits and targets are contiguous tensors of fp32 and int64 on its GPU with
    /// V_local = V; anything else (the CPU, another dtype, a sharded vocabulary, another method) runs the reference.
    /// The fused path overwrites the logits with the gradient when <paramref name="gradients"/> is set.
    /// </summary>
    public static CrossEntropyRows Apply(KernelRuntime? kernels, Tensor logits, Tensor targets, long total, CrossEntropyHooks hooks,
                                         bool gradients, bool statistics)
    {
        if (logits.dim() != 2) throw new ArgumentException($"logits of shape [{string.Join(", ", logits.shape)}]: expected [n, V_local]", nameof(logits));
        if (!targets.shape.SequenceEqual([logits.shape[0]]))
            throw new ArgumentException($"targets of shape [{string.Join(", ", targets.shape)}]: expected [{logits.shape[0]}], one per row of the logits", nameof(targets));
        if (total <= 0) throw new ArgumentOutOfRangeException(nameof(total), total, "the number of tokens N must be positive");
        return kernels is not null && hooks.Form is { } form && Fits(kernels, logits, targets, hooks.VocabSize)
            ? Fused(kernels, logits, targets, total, form, gradients, statistics)
            : Reference(logits, targets, total, hooks, gradients, statistics);
    }

    /// <summary>Whether the kernel takes these: both on the runtime's GPU, contiguous, fp32 logits of the whole vocabulary, int64 targets.</summary>
    static bool Fits(KernelRuntime kernels, Tensor logits, Tensor targets, long vocabSize) =>
        OnDevice(kernels, logits) && OnDevice(kernels, targets) && logits.dtype == ScalarType.Float32 && targets.dtype == ScalarType.Int64
        && logits.shape[1] == vocabSize && logits.shape[0] <= int.MaxValue && vocabSize <= int.MaxValue;

    static bool OnDevice(KernelRuntime kernels, Tensor t) =>
        t.device_type == DeviceType.CUDA && t.device_index == kernels.Device && t.is_contiguous();

    /// <summary>The TorchSharp ops of the chunked head: the hooks on the logits made a leaf, and autograd for the
    /// gradient of (sum of cross-entropy + sum of penalty) / N.</summary>
    public static CrossEntropyRows Reference(Tensor logits, Tensor targets, long total, CrossEntropyHooks hooks, bool gradients, bool statistics)
    {
        using var grad = enable_grad(gradients);
        var leaf = logits.requires_grad_(gradients);
        var transformed = hooks.Transform(leaf);                                         // [n, V_local]
        var logZ = hooks.LogSumExp(transformed);                                         // [n]
        var crossEntropy = logZ - hooks.TargetLogit(transformed, targets);               // [n] nats
        var penalty = hooks.Penalty(logZ);                                               // [n]
        var rows = statistics ? Statistics(transformed.detach(), hooks.Sum, hooks.Max, hooks.VocabSize) : null;
        Tensor? gradient = null;
        if (gradients)
        {
            var sum = crossEntropy.sum();
            var tokenLoss = penalty is null ? sum : sum + penalty.sum();
            gradient = torch.autograd.grad([tokenLoss / total], [leaf])[0];             // the loss is the mean over all N tokens
        }
        return new(crossEntropy.detach(), penalty?.detach(), logZ.detach(), rows, gradient);
    }

    /// <summary>The statistics of logits [n, V_local] fp32 through the vocabulary's sum and max (V: all rows), without gradient.</summary>
    public static LogitRows Statistics(Tensor logits, Func<Tensor, long, Tensor> sum, Func<Tensor, Tensor> max, long vocabSize)
    {
        using var noGrad = no_grad();
        double v = vocabSize;
        var mean = sum(logits, -1) / v;                                                  // [n]
        var deviation = logits - mean.unsqueeze(-1);                                     // [n, V_local]
        var variance = sum(deviation.square(), -1) / v;                                  // [n]; two-pass, so it stays accurate when all logits drift together
        var largest = max(logits.abs());                                                 // [n]
        return new(mean, variance.sqrt(), largest, max(deviation.abs()) / largest.clamp_min(1e-30));
    }

    /// <summary>cross_entropy.cu's outputs, in its order (enum RowOutput): [7, n] fp32.</summary>
    const int RowOutputs = 7;

    /// <summary>One launch: a block per row, two passes over it (max and sum-exp online, then the gradient).</summary>
    static CrossEntropyRows Fused(KernelRuntime kernels, Tensor logits, Tensor targets, long total, CrossEntropyForm form, bool gradients, bool statistics)
    {
        long n = logits.shape[0], v = logits.shape[1];
        var rows = empty([RowOutputs, n], ScalarType.Float32, logits.device);
        uint threads = (uint)Math.Min(1024, (v + 31) / 32 * 32);                       // a multiple of 32: the block reductions' warps
        kernels.Function("cross_entropy.cu", "cross_entropy_f32").Launch(((uint)n, 1), threads, 0,
            logits, targets, rows, (int)n, (int)v, (float)(form.SoftCap ?? 0), (float)(form.ZLossLambda ?? 0), 1.0f / total, gradients ? 1 : 0);
        return new(rows[0], form.ZLossLambda is null ? null : rows[1], rows[2],
                   statistics ? new LogitRows(rows[3], rows[4], rows[5], rows[6]) : null, gradients ? logits : null);
    }

    // fp32 (the head's logits are fp32 whatever the compute dtype): log Z sums V exponentials in another order than
    // libtorch's, so it differs by a few ulp of log Z (2^-19 ~ 2e-6 at |log Z| < 32); the loss terms and log Z carry
    // that relative to their scale, and the gradient exp(x - log Z) / N carries it as its relative error; the statistics'
    // sums differ alike. 5e-5 allows about 25 such ulps and is far below what a wrong term gives (>= 1e-3).
    const double Fp32Tolerance = 5e-5;

    /// <summary>The self-check: the kernel against the reference on random logits (4 * randn, so soft-capping at the
    /// default c = 30 bends them) for an odd shape (7 x 1001) and a chunk of the 16M and 162M models (1334 tokens x V
    /// 50304), under no transform or penalty, z-loss (the default lambda 1e-4) and soft-capping: every row output and
    /// the gradient.</summary>
    public static IEnumerable<KernelCheck> Checks(KernelRuntime kernels)
    {
        var forms = new (string Name, CrossEntropyForm Form)[] { ("none", new()), ("z_loss", new(ZLossLambda: 1e-4)), ("soft_cap", new(SoftCap: 30)) };
        foreach (var (shape, n, v) in new[] { ("7x1001", 7L, 1001L), ("16M/162M 1334x50304", 1334L, 50304L) })
            foreach (var (name, form) in forms)
                foreach (var check in Check(kernels, $"fp32 {shape} {name}", n, v, form))
                    yield return check;
    }

    static List<KernelCheck> Check(KernelRuntime kernels, string @case, long n, long v, CrossEntropyForm form)
    {
        using var scope = NewDisposeScope();
        manual_seed(20261205);                                                           // the same inputs in every run
        var device = new Device(DeviceType.CUDA, kernels.Device);
        var logits = 4 * randn([n, v], ScalarType.Float32, device);
        var targets = randint(0, v, [n], ScalarType.Int64, device);
        var hooks = CrossEntropyHooks.Local(v, form);
        var expected = Reference(logits.clone(), targets, n, hooks, gradients: true, statistics: true);
        var actual = Fused(kernels, logits.clone(), targets, n, form, gradients: true, statistics: true);
        var (e, a) = (expected.Statistics!, actual.Statistics!);
        var pairs = new List<(string, Tensor, Tensor)>
        {
            ("cross-entropy", actual.CrossEntropy, expected.CrossEntropy), ("log Z", actual.LogZ, expected.LogZ),
            ("mean", a.Mean, e.Mean), ("std", a.Std, e.Std), ("max |x|", a.MaxAbs, e.MaxAbs), ("r_log", a.RLog, e.RLog),
            ("dlogits", actual.Gradient!, expected.Gradient!),
        };
        if (form.ZLossLambda is not null) pairs.Add(("penalty", actual.Penalty!, expected.Penalty!));
        return [.. pairs.Select(p => KernelCheck.Compare("cross-entropy", @case, p.Item1, p.Item2, p.Item3, Fp32Tolerance))];
    }
}
