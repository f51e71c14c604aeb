// SwiGLU's elementwise part y = silu(a) * b (a = W x, b = V x [.., hidden], the MLP's hidden activations): the
// kernels of Sources/swiglu.cu, one pass each way, and the TorchSharp ops they replace, which are their reference.
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels.Ops;

public static class SwiGluOp
{
    const string Source = "swiglu.cu";

    /// <summary>a, b [.., hidden] -> silu(a) * b, the same shape and dtype: the kernels when <paramref name="kernels"/>
    /// is given (<see cref="Fused"/>), else <see cref="Reference"/>. Throws naming both shapes or dtypes where a and b
    /// differ (the reference would broadcast or promote them; the model never asks it to).</summary>
    public static Tensor Apply(KernelRuntime? kernels, Tensor a, Tensor b)
    {
        if (!a.shape.SequenceEqual(b.shape))
            throw new ArgumentException($"SwiGLU: a [{string.Join(", ", a.shape)}] and b [{string.Join(", ", b.shape)}]: expected one shape", nameof(b));
        if (a.dtype != b.dtype) throw new ArgumentException($"SwiGLU: a is {a.dtype} and b {b.dtype}: expected one dtype", nameof(b));
        return kernels is null ? Reference(a, b) : Fused(kernels, a, b);
    }

    /// <summary>What SwiGlu.forward computed before the kernels: silu and the product each in the inputs' dtype
    /// (autocast lists neither), so in bf16 silu(a) is rounded before the product; autograd keeps a, silu(a) and b.</summary>
    public static Tensor Reference(Tensor a, Tensor b) => nn.functional.silu(a) * b;

    /// <summary>
    /// The kernels, differentiable in a and b: y = silu(a) * b in fp32 arithmetic, rounded once to the dtype; backward
    /// da = g b silu'(a) and db = g silu(a) likewise from g, a and b, which are all it keeps. Falls back to
    /// <see cref="Reference"/> for what they do not handle: a tensor on the CPU or on another device than the runtime's,
    /// a dtype other than fp32 or bf16, a and b of different shapes or dtypes. Non-contiguous inputs are copied.
    /// </summary>
    public static Tensor Fused(KernelRuntime kernels, Tensor a, Tensor b)
    {
        if (!Handles(kernels, a, b)) return Reference(a, b);
        return AutogradOutputs.Apply(slot => Function.apply(a.contiguous(), b.contiguous(), kernels, slot));
    }

    /// <summary>The self-check: y, da and db of the kernels against the reference's, fp32 and bf16, on [7, 100]
    /// (bf16: a tail of 4 after the last 8-element pack), the same one element into an allocation (not 16-byte
    /// aligned: every element through the kernels' scalar loop), 16M's MLP [4096, 768] and 162M's [4096, 2048].</summary>
    public static IEnumerable<KernelCheck> Checks(KernelRuntime kernels)
    {
        var device = torch.device(DeviceType.CUDA, kernels.Device);
        (string Name, long Rows, long Hidden, long Offset)[] shapes =
            [("odd [7, 100]", 7, 100, 0), ("odd [7, 100] unaligned", 7, 100, 1), ("16M [4096, 768]", 4096, 768, 0), ("162M [4096, 2048]", 4096, 2048, 0)];
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var shape in shapes)
                foreach (var check in Check(kernels, device, dtype, shape.Name, shape.Rows, shape.Hidden, shape.Offset))
                    yield return check;
    }

    // Tolerances, relative to the reference's largest magnitude. fp32: the same formulas (libtorch's silu and silu
    // backward) in fp32, so at most a few ulp where a compiler fuses a product and a sum otherwise: 1e-6 (~8 ulp).
    // bf16: the reference rounds silu(a) (forward) and g b (backward) to bf16 before its last op, the kernels only
    // their results: up to three half-ulps of 2^-8 each against one: 2^-6.
    static List<KernelCheck> Check(KernelRuntime kernels, Device device, ScalarType dtype, string shape, long rows, long hidden, long offset)
    {
        using var scope = NewDisposeScope();
        manual_seed(rows * hidden + offset);
        Tensor Input() => (randn(offset + rows * hidden, device: device) * 2).to_type(dtype).narrow(0, offset, rows * hidden).view(rows, hidden).detach();
        var (a, b, g) = (Input().requires_grad_(), Input().requires_grad_(), Input());
        if (!Handles(kernels, a, b)) throw new KernelException($"swiglu: the kernels would not take {dtype} [{rows}, {hidden}]");
        var y = Reference(a, b);
        var reference = torch.autograd.grad([y], [a, b], [g]);
        var yFused = Fused(kernels, a, b);
        var fused = torch.autograd.grad([yFused], [a, b], [g]);
        double tolerance = dtype == ScalarType.Float32 ? 1e-6 : 1.0 / 64;
        string name = $"{(dtype == ScalarType.Float32 ? "fp32" : "bf16")} {shape}";
        return [KernelCheck.Compare("swiglu", name, "y", yFused, y, tolerance),
                KernelCheck.Compare("swiglu", name, "da", fused[0], reference[0], tolerance),
                KernelCheck.Compare("swiglu", name, "db", fused[1], reference[1], tolerance)];
    }

    static bool Handles(KernelRuntime kernels, Tensor a, Tensor b) =>
        a.device_type == DeviceType.CUDA && a.device_index == kernels.Device
        && a.dtype is ScalarType.Float32 or ScalarType.BFloat16
        && b.device_type == a.device_type && b.device_index == a.device_index && b.dtype == a.dtype
        && a.shape.SequenceEqual(b.shape);

    static string Suffix(Tensor t) => t.dtype == ScalarType.Float32 ? "f32" : "bf16";

    /// <summary>Blocks for n elements: one thread a 16-byte pack (4 fp32, 8 bf16).</summary>
    static uint Blocks(Tensor t) => Elementwise.Blocks((t.numel() * t.ElementSize + 15) / 16);

    /// <summary>Forward: y from a and b (contiguous, one shape and dtype); backward: da and db from g, a and b.</summary>
    sealed class Function : torch.autograd.SingleTensorFunction<Function>
    {
        public override string Name => "SwiGluFused";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            var (a, b, kernels) = ((Tensor)vars[0], (Tensor)vars[1], (KernelRuntime)vars[2]);
            AutogradOutputs.Fill(ctx, vars);
            ctx.save_for_backward([a, b]);
            ctx.save_data("kernels", kernels);
            var y = empty_like(a);
            kernels.Function(Source, $"swiglu_forward_{Suffix(a)}").Launch((Blocks(a), 1), Elementwise.Threads, 0, a, b, y, a.numel());
            return y;
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) => BackwardTensors.Run(gradOutput, () =>
        {
            using var scope = NewDisposeScope();
            var kernels = (KernelRuntime)ctx.get_data("kernels");
            var saved = ctx.get_saved_variables();
            var (a, b) = (saved[0], saved[1]);
            var g = gradOutput.to_type(a.dtype).contiguous();
            var (da, db) = (empty_like(a), empty_like(b));
            kernels.Function(Source, $"swiglu_backward_{Suffix(a)}").Launch((Blocks(a), 1), Elementwise.Threads, 0, g, a, b, da, db, a.numel());
            return [da.MoveToOuterDisposeScope(), db.MoveToOuterDisposeScope(), null!, null!];
        });
    }
}
