// LayerNorm over the last dim with a weight and no bias (the model's ln_1, ln_2, ln_f): the fused kernels
// (Sources/layernorm.cu) and the TorchSharp op they replace, which is their reference.
using System.Runtime.CompilerServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels.Ops;

public static class LayerNormOp
{
    const string Source = "layernorm.cu";
    const int Threads = 256;                 // 8 warps a block, one row a warp
    const int Warps = Threads / 32;
    const int MaxPartials = 1024;            // backward's blocks, each one row of the weight's partial sums
    const int MaxWidth = 3072;               // backward keeps 8 rows of d floats in shared memory: 96 KiB at most
    const int DefaultSharedBytes = 48 << 10; // above this a launch must allow more dynamic shared memory

    /// <summary>x [.., d] -> (x - mean) / sqrt(var + eps) * weight [d] over the last dim (biased variance), the same
    /// shape and dtype: the fused kernels when <paramref name="kernels"/> is given, else <see cref="Reference"/>.
    /// Throws naming both sizes unless weight is [d].</summary>
    public static Tensor Apply(KernelRuntime? kernels, Tensor x, Tensor weight, double eps)
    {
        if (weight.dim() != 1 || x.dim() < 1 || weight.shape[0] != x.shape[^1])
            throw new ArgumentException($"LayerNorm: weight [{string.Join(", ", weight.shape)}] does not fit x [{string.Join(", ", x.shape)}]: expected weight [{(x.dim() < 1 ? "d" : x.shape[^1])}]", nameof(weight));
        return kernels is null ? Reference(x, weight, eps) : Fused(kernels, x, weight, eps);
    }

    /// <summary>What nn.LayerNorm([d], bias: false).forward computes (libtorch's layer_norm): the model's ops before the kernels.</summary>
    public static Tensor Reference(Tensor x, Tensor weight, double eps) =>
        nn.functional.layer_norm(x, [weight.shape[0]], weight, null, eps);

    /// <summary>
    /// The kernels, differentiable in x and weight (backward: dx per row, and dweight as per-block partial sums then a
    /// column sum, in a fixed order: deterministic, no atomics). Falls back to <see cref="Reference"/> for what they do
    /// not handle: a CPU tensor, a dtype other than fp32 or bf16, a weight of another dtype or device than x, an empty
    /// x, d above 3072. A non-contiguous x is copied.
    /// </summary>
    public static Tensor Fused(KernelRuntime kernels, Tensor x, Tensor weight, double eps)
    {
        if (!Handles(kernels, x, weight)) return Reference(x, weight, eps);
        var call = new Call(kernels, (float)eps, new());
        var y = Function.apply(x.contiguous(), weight.contiguous(), call);
        if (call.Context.Value is { } ctx) AutogradOutputs.Slim(ctx);
        return y;
    }

    static bool Handles(KernelRuntime kernels, Tensor x, Tensor weight) =>
        x.device_type == DeviceType.CUDA && x.device_index == kernels.Device
        && x.dtype is ScalarType.Float32 or ScalarType.BFloat16
        && weight.dtype == x.dtype && weight.device_type == x.device_type && weight.device_index == x.device_index
        && x.numel() > 0 && weight.shape[0] <= MaxWidth;

    static string Suffix(Tensor t) => t.dtype == ScalarType.Float32 ? "f32" : "bf16";

    /// <summary>x [.., d] contiguous -> y (x's shape and dtype), mean and rstd [N] fp32, N = x.numel() / d.</summary>
    static (Tensor Y, Tensor Mean, Tensor Rstd) Forward(KernelRuntime kernels, Tensor x, Tensor weight, float eps)
    {
        int d = (int)weight.shape[0], N = checked((int)(x.numel() / d));
        var y = empty_like(x);
        var mean = empty(N, ScalarType.Float32, x.device);
        var rstd = empty(N, ScalarType.Float32, x.device);
        kernels.Function(Source, $"layernorm_forward_{Suffix(x)}")
            .Launch(((uint)((N + Warps - 1) / Warps), 1), Threads, 0, x, weight, y, mean, rstd, N, d, eps);
        return (y, mean, rstd);
    }

    /// <summary>dy, x [.., d] contiguous, weight [d], mean and rstd [N] -> dx (x's shape and dtype), dweight [d].</summary>
    static (Tensor Dx, Tensor Dweight) Backward(KernelRuntime kernels, Tensor dy, Tensor x, Tensor weight, Tensor mean, Tensor rstd)
    {
        int d = (int)weight.shape[0], N = (int)mean.shape[0];
        int blocks = Math.Min((N + Warps - 1) / Warps, MaxPartials);
        var dx = empty_like(x);
        var dweight = empty_like(weight);
        using var partial = empty([blocks, d], ScalarType.Float32, x.device); // freed in stream order: safe while queued
        uint sharedBytes = (uint)(Warps * d * sizeof(float));
        var backward = kernels.Function(Source, $"layernorm_backward_{Suffix(x)}");
        if (sharedBytes > DefaultSharedBytes) backward.AllowSharedBytes((int)sharedBytes);
        backward.Launch(((uint)blocks, 1), Threads, sharedBytes, dy, x, weight, mean, rstd, dx, partial, N, d);
        kernels.Function(Source, $"layernorm_weight_grad_{Suffix(x)}")
            .Launch(((uint)((d + 31) / 32), 1), Threads, 0, partial, dweight, blocks, d);
        return (dx, dweight);
    }

    /// <summary>The function's non-tensor argument: the runtime, eps, and where forward leaves its context (for Slim).</summary>
    sealed record Call(KernelRuntime Kernels, float Eps, StrongBox<torch.autograd.AutogradContext?> Context);

    /// <summary>Forward saves x, weight, mean and rstd; backward returns dx and dweight.</summary>
    sealed class Function : torch.autograd.SingleTensorFunction<Function>
    {
        public override string Name => "FusedLayerNorm";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            var (x, weight, call) = ((Tensor)vars[0], (Tensor)vars[1], (Call)vars[2]);
            call.Context.Value = ctx;
            var (y, mean, rstd) = Forward(call.Kernels, x, weight, call.Eps);
            ctx.save_for_backward([x, weight, mean, rstd]);
            ctx.save_data("kernels", call.Kernels);
            return y;
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) => BackwardTensors.Run(gradOutput, () =>
        {
            var saved = ctx.get_saved_variables();
            using var dy = gradOutput.contiguous();
            var (dx, dweight) = Backward((KernelRuntime)ctx.get_data("kernels"), dy, saved[0], saved[1], saved[2], saved[3]);
            saved.ForEach(t => t.Dispose());
            return [dx, dweight, null!];
        });
    }

    /// <summary>The self-check: fp32 and bf16 at an odd shape (7 rows, d 100), the 16M model's (4096 x 224, and its
    /// whole batch of 16 x 2048 rows, where backward's blocks reach their cap of 1024 and each warp takes several rows)
    /// and the 162M's (4096 x 768); y, dx and dweight of the kernels against <see cref="Reference"/>'s on the same inputs.</summary>
    public static IEnumerable<KernelCheck> Checks(KernelRuntime kernels)
    {
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var (N, d) in new[] { (7, 100), (4096, 224), (32768, 224), (4096, 768) })
                foreach (var check in Check(kernels, dtype, N, d)) yield return check;
    }

    // Tolerances, relative to the reference's largest magnitude. fp32: the kernels sum in another order than libtorch
    // (two passes against Welford; warp trees against its own), each sum off by at most about one ulp (2^-24) per term:
    // 4 ulp times the reduction length, d for y and dx, N + d for dweight (its terms carry xhat's error from the row sums).
    // bf16: both sides compute in fp32 and round once; values a few fp32 ulp apart can round to neighbouring bf16
    // values, one bf16 ulp, which is at most 2^-7 of the largest value.
    static double Fp32Tolerance(long length) => 4 * length * Math.Pow(2, -24);
    const double Bf16Tolerance = 1.0 / 128;

    static List<KernelCheck> Check(KernelRuntime kernels, ScalarType dtype, int N, int d)
    {
        using var scope = NewDisposeScope();
        var device = new Device(DeviceType.CUDA, kernels.Device);
        using var generator = new Generator((ulong)(N * 1000 + d));
        var x = (randn([N, d], generator: generator) * 2 + 0.5).to(dtype, device);     // [N, d], mean 0.5 and std 2
        var weight = (1 + 0.1 * randn([d], generator: generator)).to(dtype, device);   // [d], about 1
        var dy = randn([N, d], generator: generator).to(dtype, device);                 // [N, d]
        if (!Handles(kernels, x, weight)) throw new KernelException($"layernorm: the kernels would not take {dtype} x [{N}, {d}]");
        var fused = Run((x, weight) => Fused(kernels, x, weight, 1e-5), x, weight, dy);
        var reference = Run((x, weight) => Reference(x, weight, 1e-5), x, weight, dy);
        bool fp32 = dtype == ScalarType.Float32;
        string @case = $"{(fp32 ? "fp32" : "bf16")} N {N} x d {d}";
        return
        [
            KernelCheck.Compare("layernorm", @case, "y", fused.Y, reference.Y, fp32 ? Fp32Tolerance(d) : Bf16Tolerance),
            KernelCheck.Compare("layernorm", @case, "dx", fused.Dx, reference.Dx, fp32 ? Fp32Tolerance(d) : Bf16Tolerance),
            KernelCheck.Compare("layernorm", @case, "dweight", fused.Dweight, reference.Dweight, fp32 ? Fp32Tolerance(N + d) : Bf16Tolerance),
        ];
    }

    /// <summary>y = op(x, weight) on leaves made from the inputs, then backward from dy: (y, dx, dweight).</summary>
    static (Tensor Y, Tensor Dx, Tensor Dweight) Run(Func<Tensor, Tensor, Tensor> op, Tensor x, Tensor weight, Tensor dy)
    {
        var xLeaf = x.detach().requires_grad_(true);
        var weightLeaf = weight.detach().requires_grad_(true);
        var y = op(xLeaf, weightLeaf);
        y.backward([dy]);
        return (y.detach(), xLeaf.grad!, weightLeaf.grad!);
    }
}
