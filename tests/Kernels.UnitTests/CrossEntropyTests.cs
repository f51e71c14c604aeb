// The fused cross-entropy (cross_entropy.cu) against its reference on a GPU; on the CPU, the reference against the
// closed-form gradient the kernel computes, the fallback without kernels, and the argument checks.
using Kernels.Ops;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Kernels.UnitTests;

public class CrossEntropyTests(ITestOutputHelper log)
{
    const long N = 6, V = 37;

    static readonly CrossEntropyForm[] Forms = [new(), new(ZLossLambda: 0.05), new(SoftCap: 2), new(SoftCap: 2, ZLossLambda: 0.05)];

    /// <summary>logits [N, V] (3 * randn, so a cap of 2 bends them) and targets [N] on <paramref name="device"/>, from a fixed seed.</summary>
    static (Tensor Logits, Tensor Targets) Data(Device device)
    {
        manual_seed(20261205);
        return ((3 * randn(N, V)).to(device), randint(0, V, [N], dtype: ScalarType.Int64).to(device));
    }

    [SkippableFact]
    public void Every_self_check_of_the_kernel_passes()
    {
        var rt = Gpu.Runtime();
        var checks = CrossEntropyOp.Checks(rt).ToList();
        Assert.NotEmpty(checks);
        Assert.All(checks, c => Assert.True(c.Passed, c.ToString()));
    }

    [SkippableFact]
    public void The_kernel_writes_the_gradient_over_the_logits_and_without_gradients_leaves_them_and_gives_the_same_rows()
    {
        var rt = Gpu.Runtime();
        var (logits, targets) = Data(CUDA);
        foreach (var form in Forms)
        {
            var given = logits.clone();
            var hooks = CrossEntropyHooks.Local(V, form);
            var without = CrossEntropyOp.Apply(rt, given, targets, N, hooks, gradients: false, statistics: true);
            var overwritten = logits.clone();
            var with = CrossEntropyOp.Apply(rt, overwritten, targets, N, hooks, gradients: true, statistics: true);

            Assert.Same(overwritten, with.Gradient); // the kernel ran: it writes the gradient over the logits
            Assert.Null(without.Gradient);
            Assert.True(Equal(given, logits), $"{form}: the logits changed without gradients");
            Assert.True(Equal(without.CrossEntropy, with.CrossEntropy), $"{form}: cross-entropy");
            Assert.True(Equal(without.LogZ, with.LogZ), $"{form}: log Z");
        }
    }

    [SkippableFact]
    public void Inputs_the_kernel_does_not_take_run_the_reference()
    {
        var rt = Gpu.Runtime();
        var (logits, targets) = Data(CUDA);
        var hooks = CrossEntropyHooks.Local(V, new(SoftCap: 2));
        var cases = new (string What, Tensor Logits, Tensor Targets, CrossEntropyHooks Hooks)[]
        {
            ("CPU tensors", logits.cpu(), targets.cpu(), hooks),
            ("fp64 logits", logits.to_type(ScalarType.Float64), targets, hooks),
            ("non-contiguous logits", logits.t().contiguous().t(), targets, hooks),
            ("hooks without a form", logits.clone(), targets, hooks with { Form = null }),
        };
        foreach (var (what, given, t, h) in cases)
        {
            var before = given.clone();
            var actual = CrossEntropyOp.Apply(rt, given, t, N, h, gradients: true, statistics: false);
            var expected = CrossEntropyOp.Reference(before.clone(), t, N, h, gradients: true, statistics: false);

            Assert.True(Equal(given, before), $"{what}: the logits were overwritten");
            Assert.True(Equal(actual.Gradient!, expected.Gradient!), $"{what}: the gradient is not the reference's");
        }
    }

    [Fact]
    public void Without_kernels_Apply_is_the_reference_bit_for_bit()
    {
        var (logits, targets) = Data(CPU);
        foreach (var form in Forms)
        {
            var hooks = CrossEntropyHooks.Local(V, form);
            var actual = CrossEntropyOp.Apply(null, logits.clone(), targets, N, hooks, gradients: true, statistics: true);
            var expected = CrossEntropyOp.Reference(logits.clone(), targets, N, hooks, gradients: true, statistics: true);

            Assert.True(Equal(actual.CrossEntropy, expected.CrossEntropy), $"{form}: cross-entropy");
            Assert.True(Equal(actual.LogZ, expected.LogZ), $"{form}: log Z");
            Assert.True(Equal(actual.Gradient!, expected.Gradient!), $"{form}: gradient");
            Assert.True(Equal(actual.Statistics!.Std, expected.Statistics!.Std), $"{form}: std");
            Assert.Equal(form.ZLossLambda is null, actual.Penalty is null);
        }
    }

    // The closed forms cross_entropy.cu computes, in fp64 from the same fp32 logits: x = c tanh(l / c) (or l),
    // log Z = log sum exp x, d/dx = ((1 + 2 lambda log Z) softmax(x) - onehot(t)) / N, d/dl = d/dx (1 - tanh^2(l / c)),
    // and the statistics. The fp32 reference meets them within 1e-5 of each output's scale (V = 37 terms per sum).
    [Fact]
    public void The_reference_is_the_closed_form_the_kernel_computes()
    {
        var (logits, targets) = Data(CPU);
        foreach (var form in Forms)
        {
            var rows = CrossEntropyOp.Reference(logits.clone(), targets, 2 * N, CrossEntropyHooks.Local(V, form), gradients: true, statistics: true);
            var l = logits.to_type(ScalarType.Float64);
            var x = form.SoftCap is { } c ? (l / c).tanh() * c : l;
            var logZ = x.logsumexp(-1);
            double lambda = form.ZLossLambda ?? 0;
            var onehot = nn.functional.one_hot(targets, V).to_type(ScalarType.Float64);
            var dx = ((1 + 2 * lambda * logZ).unsqueeze(-1) * (x - logZ.unsqueeze(-1)).exp() - onehot) / (2 * N);
            var dl = form.SoftCap is { } cap ? dx * (1 - (l / cap).tanh().square()) : dx;
            var mean = x.mean([-1]);
            var largest = x.abs().amax(-1);

            Close($"{form} cross-entropy", logZ - x.gather(-1, targets.unsqueeze(-1)).squeeze(-1), rows.CrossEntropy);
            Close($"{form} log Z", logZ, rows.LogZ);
            if (form.ZLossLambda is not null) Close($"{form} penalty", lambda * logZ.square(), rows.Penalty!);
            Close($"{form} gradient", dl, rows.Gradient!);
            Close($"{form} mean", mean, rows.Statistics!.Mean);
            Close($"{form} std", (x - mean.unsqueeze(-1)).square().mean([-1]).sqrt(), rows.Statistics.Std);
            Close($"{form} max |x|", largest, rows.Statistics.MaxAbs);
            Close($"{form} r_log", (x - mean.unsqueeze(-1)).abs().amax(-1) / largest, rows.Statistics.RLog);
        }
    }

    /// <summary>The same shape and the same values, element for element.</summary>
    static bool Equal(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    static void Close(string what, Tensor expected, Tensor actual)
    {
        var check = KernelCheck.Compare("cross-entropy", "closed form", what, actual, expected, 1e-5);
        Assert.True(check.Passed, check.ToString());
    }

    // Emulation/cross_entropy_host.cpp includes the kernel source as it is embedded and runs it on the host, one fiber
    // per CUDA thread (Emulation/cuda_host.h), against the closed form in fp64; it exits with its number of misses.
    [Fact]
    public void On_the_host_the_kernel_source_meets_the_closed_form_in_fp64()
    {
        var (misses, output) = HostEmulation.Run("cross_entropy_host");
        log.WriteLine(output);
        Assert.True(misses == 0, output);
    }

    [Fact]
    public void Arguments_of_the_wrong_shape_are_refused_by_name()
    {
        var (logits, targets) = Data(CPU);
        var hooks = CrossEntropyHooks.Local(V, new());

        var flat = Assert.Throws<ArgumentException>(() => CrossEntropyOp.Apply(null, logits.flatten(), targets, N, hooks, true, false));
        Assert.Equal("logits", flat.ParamName);
        var shortTargets = Assert.Throws<ArgumentException>(() => CrossEntropyOp.Apply(null, logits, targets.narrow(0, 0, 3), N, hooks, true, false));
        Assert.Equal("targets", shortTargets.ParamName);
        Assert.Contains("[3]", shortTargets.Message);
        var noTokens = Assert.Throws<ArgumentOutOfRangeException>(() => CrossEntropyOp.Apply(null, logits, targets, 0, hooks, true, false));
        Assert.Equal("total", noTokens.ParamName);
    }
}
