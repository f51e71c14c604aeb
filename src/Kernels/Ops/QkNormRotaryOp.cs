// qk-LayerNorm per head fused with rotary positions: attention's queries or keys straight out of qkv, forward and backward.
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels.Ops;

/// <summary>
/// One of q, k (or v) of causal self-attention, normalised and rotated: qkv [B, T, 3, nh, hs] (c_attn's output in the
/// compute dtype) -> slice <c>which</c> as [B, nh, T, hs] fp32: LayerNorm over hs (weight [hs], no bias, eps 1e-5) in
/// fp32, then rotary positions 0..T-1 on the first hs/2 dims in interleaved pairs, with tables cos, sin [T_max, hs/2]
/// fp32 (sin signed per pair: -sin, +sin): (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin); dims hs/2..hs unchanged.
/// </summary>
public static class QkNormRotaryOp
{
    const string Source = "qk_norm_rotary.cu";
    const int Warps = 8;                // rows per block (one warp each), as QK_WARPS in the source
    const int MaxHeadDim = 256;         // 8 elements per lane in registers (QK_PER_LANE)
    const int MaxBackwardBlocks = 1024; // about one wave of 256-thread blocks on an H200; also the rows of dweight's partial sums
    const double Eps = 1e-5;

    /// <summary>The normalised, rotated slice <paramref name="which"/> (0 q, 1 k, 2 v) of qkv [B, T, 3, nh, hs]:
    /// [B, nh, T, hs] fp32, differentiable to qkv and <paramref name="weight"/> [hs]. <paramref name="kernels"/> null:
    /// the TorchSharp ops (<see cref="Reference"/>). Throws naming the value for shapes that do not fit, and for hs/2 odd.</summary>
    public static Tensor Apply(KernelRuntime? kernels, Tensor qkv, int which, Tensor weight, Tensor cos, Tensor sin)
    {
        Validate(qkv, which, weight, cos, sin);
        return kernels is null ? Reference(qkv, which, weight, cos, sin) : Fused(kernels, qkv, which, weight, cos, sin);
    }

    /// <summary>The model's ops, as CausalSelfAttention ran them: the slice in fp32 (a no-op in fp32, as autocast
    /// gives layer_norm fp32), layer_norm, <see cref="Rotate"/>.</summary>
    public static Tensor Reference(Tensor qkv, int which, Tensor weight, Tensor cos, Tensor sin)
    {
        var x = qkv.permute(2, 0, 3, 1, 4)[which].to_type(ScalarType.Float32);               // [B, nh, T, hs]
        return Rotate(nn.functional.layer_norm(x, [qkv.shape[4]], weight, null, Eps), cos, sin);
    }

    /// <summary>Rotary positions: x [B, nh, T, hs] -> same shape, positions 0..T-1, tables cos, sin [T_max, hs/2] in
    /// x's dtype and device: x cos + swap(x) (-sin, +sin) per pair on the first hs/2 dims (five kernels: the swap's
    /// stack, two products, a sum, the concatenation; flip or index_select would take fewer calls but have no meta
    /// kernel, which RotaryTests moves the model to).</summary>
    public static Tensor Rotate(Tensor x, Tensor cos, Tensor sin)
    {
        long T = x.shape[2], hs = x.shape[3], rotated = cos.shape[1];
        var rot = x.narrow(3, 0, rotated);                                               // [B, nh, T, hs/2]
        var pairs = rot.unflatten(3, [rotated / 2, 2]);                                   // [B, nh, T, hs/4, 2]
        var swapped = stack([pairs.select(4, 1), pairs.select(4, 0)], -1).flatten(-2);    // (x1, x2) -> (x2, x1)
        return cat([rot * cos.narrow(0, 0, T) + swapped * sin.narrow(0, 0, T), x.narrow(3, rotated, hs - rotated)], -1);
    }

    /// <summary>The kernels: one launch forward (the output and each row's mean and rstd, kept for backward), one
    /// backward plus the sum of the blocks' dweight partials. Falls back to <see cref="Reference"/> for what they do
    /// not handle: qkv not on the runtime's CUDA device, not fp32 or bf16, not contiguous, hs over 256; weight or the
    /// tables not fp32 and contiguous on that device.</summary>
    public static Tensor Fused(KernelRuntime kernels, Tensor qkv, int which, Tensor weight, Tensor cos, Tensor sin)
    {
        if (!Handles(kernels, qkv, weight, cos, sin)) return Reference(qkv, which, weight, cos, sin);
        return AutogradOutputs.Apply(slot => Function.apply(qkv, weight, new Call(kernels, which, cos, sin), slot));
    }

    /// <summary>The self-check: the kernels against <see cref="Reference"/> on the same random inputs, q and k of
    /// each case, fp32 and bf16 qkv: B 2, T 7, nh 3, hs 20 (a row shorter than a warp, an odd number of pairs); the 16M shape
    /// (T 2048, nh 4, hs 56); the 162M shape (T 1024, nh 12, hs 64). The tables are uniform in [-1, 1], not rotary's,
    /// so that each of their entries is checked where it is used, and T_max exceeds T.</summary>
    public static IEnumerable<KernelCheck> Checks(KernelRuntime kernels)
    {
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
            foreach (var (B, T, nh, hs) in new[] { (2, 7, 3, 20), (2, 2048, 4, 56), (2, 1024, 12, 64) })
                foreach (int which in new[] { 0, 1 })
                    foreach (var check in CheckCase(kernels, dtype, B, T, nh, hs, which)) yield return check;
    }

    // Tolerances, relative to the reference's largest magnitude. fp32: the kernel and libtorch reduce a row's hs
    // elements in other orders (and rsqrtf is within 2 ulp), so 8 ulp (2^-24 each) per element of the reduction; the
    // same for the output from bf16 qkv, since both compute it in fp32 from the same bf16 values. dqkv from bf16: both
    // round an fp32 gradient to bf16 once; where the fp32 values differ by an ulp across a rounding boundary, they
    // differ by one bf16 ulp, 2^-7 of the largest at most. dweight: a sum over the B nh T rows in another order adds
    // about sqrt(rows) ulp, 8 sqrt(rows) allowed.
    const double Fp32Ulp = 1.0 / (1 << 24), Bf16Ulp = 1.0 / (1 << 7);

    static List<KernelCheck> CheckCase(KernelRuntime kernels, ScalarType dtype, int B, int T, int nh, int hs, int which)
    {
        using var scope = NewDisposeScope();
        var device = new Device(DeviceType.CUDA, kernels.Device);
        manual_seed(19 + which);
        var qkv = (randn([B, T, 3, nh, hs], device: device) + 0.5).to_type(dtype);   // [B, T, 3, nh, hs], rows off zero mean
        var weight = 1 + 0.1 * randn([hs], device: device);
        var cos = rand([T + 3, hs / 2], device: device) * 2 - 1;                      // [T_max, hs/2]
        var sin = rand([T + 3, hs / 2], device: device) * 2 - 1;
        var dy = randn([B, nh, T, hs], device: device);                               // the gradient of the output
        if (!Handles(kernels, qkv, weight, cos, sin)) throw new KernelException($"qk-norm-rotary: the kernels would not take {dtype} qkv [{string.Join(", ", qkv.shape)}]");
        var fused = Differentiate((x, w) => Fused(kernels, x, which, w, cos, sin), qkv, weight, dy);
        var reference = Differentiate((x, w) => Reference(x, which, w, cos, sin), qkv, weight, dy);
        string @case = $"{(dtype == ScalarType.BFloat16 ? "bf16" : "fp32")} B {B} T {T} nh {nh} hs {hs} {"qkv"[which]}";
        double rowTolerance = 8 * hs * Fp32Ulp;
        return
        [
            KernelCheck.Compare("qk-norm-rotary", @case, "out", fused.Out, reference.Out, rowTolerance),
            KernelCheck.Compare("qk-norm-rotary", @case, "dqkv", fused.QkvGrad, reference.QkvGrad, dtype == ScalarType.BFloat16 ? Bf16Ulp + rowTolerance : rowTolerance),
            KernelCheck.Compare("qk-norm-rotary", @case, "dweight", fused.WeightGrad, reference.WeightGrad, rowTolerance + 8 * Math.Sqrt(B * T * nh) * Fp32Ulp),
        ];
    }

    /// <summary>op's output and the gradients of qkv and weight (leaf copies) under the output gradient dy.</summary>
    static (Tensor Out, Tensor QkvGrad, Tensor WeightGrad) Differentiate(Func<Tensor, Tensor, Tensor> op, Tensor qkv, Tensor weight, Tensor dy)
    {
        var x = qkv.detach().requires_grad_(true);
        var w = weight.detach().requires_grad_(true);
        var y = op(x, w);
        y.backward([dy]);
        return (y.detach(), x.grad!, w.grad!);
    }

    static void Validate(Tensor qkv, int which, Tensor weight, Tensor cos, Tensor sin)
    {
        if (qkv.dim() != 5 || qkv.shape[2] != 3)
            throw new ArgumentException($"qkv: expected [B, T, 3, nh, hs], got [{string.Join(", ", qkv.shape)}]", nameof(qkv));
        long T = qkv.shape[1], hs = qkv.shape[4];
        if (which is < 0 or > 2) throw new ArgumentOutOfRangeException(nameof(which), which, "which: 0 (q), 1 (k) or 2 (v)");
        if ((hs / 2) % 2 != 0)
            throw new ArgumentException($"hs = {hs}: rotary turns the first hs/2 = {hs / 2} dims in pairs, so hs/2 must be even", nameof(qkv));
        if (!weight.shape.SequenceEqual([hs]))
            throw new ArgumentException($"weight: expected [{hs}] (hs), got [{string.Join(", ", weight.shape)}]", nameof(weight));
        foreach (var (name, table) in new[] { ("cos", cos), ("sin", sin) })
            if (table.dim() != 2 || table.shape[0] < T || table.shape[1] != hs / 2)
                throw new ArgumentException($"{name}: expected [T_max >= {T}, {hs / 2}] (hs/2), got [{string.Join(", ", table.shape)}]", name);
    }

    static bool Handles(KernelRuntime kernels, Tensor qkv, Tensor weight, Tensor cos, Tensor sin) =>
        qkv.device_type == DeviceType.CUDA && qkv.device_index == kernels.Device
        && (qkv.dtype is ScalarType.Float32 or ScalarType.BFloat16) && qkv.is_contiguous()
        && qkv.shape[4] <= MaxHeadDim && qkv.shape[0] * qkv.shape[1] * qkv.shape[3] <= int.MaxValue
        && new[] { weight, cos, sin }.All(t => t.device_type == DeviceType.CUDA && t.device_index == qkv.device_index
            && t.dtype == ScalarType.Float32 && t.is_contiguous());

    static string KernelName(string kernel, ScalarType dtype) => dtype == ScalarType.BFloat16 ? $"{kernel}_bf16" : $"{kernel}_f32";

    static uint Blocks(long rows) => (uint)((rows + Warps - 1) / Warps);

    /// <summary>What the function needs besides its inputs.</summary>
    sealed record Call(KernelRuntime Kernels, int Which, Tensor Cos, Tensor Sin);

    /// <summary>Inputs qkv [B, T, 3, nh, hs] and weight [hs]; output [B, nh, T, hs] fp32; saves qkv, weight and the
    /// rows' mean and rstd [B nh T] fp32. Backward: dqkv [B, T, 3, nh, hs] in qkv's dtype (zero outside the slice), dweight [hs].</summary>
    sealed class Function : torch.autograd.SingleTensorFunction<Function>
    {
        public override string Name => "QkNormRotary";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            var (qkv, weight, call) = ((Tensor)vars[0], (Tensor)vars[1], (Call)vars[2]);
            AutogradOutputs.Fill(ctx, vars); // its placeholder would hold a second [B, nh, T, hs] fp32
            long B = qkv.shape[0], T = qkv.shape[1], nh = qkv.shape[3], hs = qkv.shape[4];
            int rows = (int)(B * nh * T);
            var y = empty([B, nh, T, hs], ScalarType.Float32, qkv.device);
            var mean = empty([rows], ScalarType.Float32, qkv.device);
            var rstd = empty([rows], ScalarType.Float32, qkv.device);
            call.Kernels.Function(Source, KernelName("qk_norm_rotary_forward", qkv.dtype)).Launch((Blocks(rows), 1), Warps * 32, 0,
                y, mean, rstd, qkv, weight, call.Cos, call.Sin, rows, (int)T, (int)nh, (int)hs, call.Which);
            ctx.save_for_backward([qkv, weight, mean, rstd]);
            ctx.save_data("call", call);
            return y;
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) => BackwardTensors.Run(gradOutput, () =>
        {
            var call = (Call)ctx.get_data("call");
            var saved = ctx.get_saved_variables();
            var (qkv, weight, mean, rstd) = (saved[0], saved[1], saved[2], saved[3]);
            long T = qkv.shape[1], nh = qkv.shape[3], hs = qkv.shape[4];
            int rows = (int)mean.shape[0];
            uint blocks = Math.Min(Blocks(rows), MaxBackwardBlocks);
            using var dy = gradOutput.to_type(ScalarType.Float32).contiguous();             // [B, nh, T, hs]
            var dqkv = zeros(qkv.shape, qkv.dtype, qkv.device);                             // [B, T, 3, nh, hs]
            using var partial = empty([blocks, hs], ScalarType.Float32, qkv.device);        // each block's dweight
            call.Kernels.Function(Source, KernelName("qk_norm_rotary_backward", qkv.dtype)).Launch((blocks, 1), Warps * 32, 0,
                dqkv, partial, dy, qkv, weight, mean, rstd, call.Cos, call.Sin, rows, (int)T, (int)nh, (int)hs, call.Which);
            var dweight = partial.sum(0);                                                   // [hs]
            saved.ForEach(t => t.Dispose());
            return [dqkv, dweight, null!, null!];
        });
    }
}
