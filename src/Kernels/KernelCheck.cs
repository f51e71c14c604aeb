// The self-check's comparisons: every fused kernel against the TorchSharp ops it replaces, on the same random inputs.
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels;

/// <summary>
/// One output (or gradient) of one kernel in one case (dtype and shape): the largest absolute difference between the
/// fused result and the reference, and the reference's largest magnitude (its scale); the check passes when the
/// relative error (difference / scale) is within the kernel's stated tolerance for that dtype.
/// </summary>
public sealed record KernelCheck(string Kernel, string Case, string Output, double MaxAbsError, double Scale, double Tolerance)
{
    public double RelativeError => MaxAbsError / Math.Max(Scale, 1e-30);
    public bool Passed => double.IsFinite(MaxAbsError) && RelativeError <= Tolerance;

    /// <summary>Compares <paramref name="fused"/> with <paramref name="reference"/> (same shape; any float dtypes), in fp64.</summary>
    public static KernelCheck Compare(string kernel, string @case, string output, Tensor fused, Tensor reference, double tolerance)
    {
        if (!fused.shape.SequenceEqual(reference.shape))
            throw new ArgumentException($"{kernel} {@case} {output}: fused shape [{string.Join(", ", fused.shape)}], reference [{string.Join(", ", reference.shape)}]");
        using var scope = NewDisposeScope();
        var f = fused.detach().to(float64, CPU);
        var r = reference.detach().to(float64, CPU);
        double error = f.numel() == 0 ? 0 : (f - r).abs().max().item<double>();
        double scale = r.numel() == 0 ? 0 : r.abs().max().item<double>();
        if (f.isnan().any().item<bool>() != r.isnan().any().item<bool>()) error = double.NaN;
        return new(kernel, @case, output, error, scale, tolerance);
    }

    public override string ToString() =>
        $"{Kernel,-22} {Case,-34} {Output,-12} max abs {MaxAbsError,10:G3}  rel {RelativeError,10:G3}  tol {Tolerance,8:G2}  {(Passed ? "ok" : "MISS")}";
}

/// <summary>Every kernel's self-check, in the order the step profile ranks them.</summary>
public static class KernelChecks
{
    /// <summary>(kernel family, its checks on a runtime): each runs the kernels and their references on random inputs
    /// of the model's shapes (fp32 and bf16, odd sizes, the 16M and 162M shapes), forward and backward.</summary>
    public static IReadOnlyList<(string Name, Func<KernelRuntime, IEnumerable<KernelCheck>> Run)> All { get; } =
    [
        ("layernorm", Ops.LayerNormOp.Checks),
        ("qk-norm-rotary", Ops.QkNormRotaryOp.Checks),
        ("swiglu", Ops.SwiGluOp.Checks),
        ("cross-entropy", Ops.CrossEntropyOp.Checks),
        ("adamw", Ops.AdamWOp.Checks),
    ];
}
