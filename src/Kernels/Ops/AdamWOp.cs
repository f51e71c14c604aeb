// AdamW over one flat fp32 run of parameters (a FlatAdamW group, a ZeRO shard): the kernel of Sources/adamw.cu, one
// launch that reads p, g, m, v once and writes p, m, v, and the TorchSharp ops it replaces, which are its reference.
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels.Ops;

public static class AdamWOp
{
    const string Source = "adamw.cu";

    /// <summary>One AdamW step at t = <paramref name="step"/> (1 at the first) on data, grad, expAvg, expAvgSq [n]:
    /// the kernel when <paramref name="kernels"/> is given and the four are fp32, contiguous and on its device
    /// (<see cref="Fused"/>, the learning rate written to device memory without a host sync, gradient scale 1), else
    /// <see cref="Reference"/>. Throws naming the tensor that is not flat or differs from data in length or dtype.</summary>
    public static void Apply(KernelRuntime? kernels, Tensor data, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step,
                             double lr, double weightDecay, double beta1, double beta2, double eps)
    {
        CheckRun(data, grad, expAvg, expAvgSq, step);
        if (kernels is null || !Handles(kernels, data, grad, expAvg, expAvgSq))
        {
            Reference(data, grad, expAvg, expAvgSq, step, lr, weightDecay, beta1, beta2, eps);
            return;
        }
        using var lrAndScale = LearningRateAndScale(lr, 1, data.device);
        Fused(kernels, data, grad, expAvg, expAvgSq, lrAndScale, step, weightDecay, beta1, beta2, eps);
    }

    /// <summary>The arithmetic of PyTorch's single-tensor AdamW (and TorchSharp's) at step <paramref name="step"/>,
    /// element by element, so any split of a buffer into runs gives the same bits as the whole.</summary>
    public static void Reference(Tensor data, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step, double lr, double weightDecay,
                                 double beta1, double beta2, double eps)
    {
        using var scope = NewDisposeScope();
        double bias1 = 1 - Math.Pow(beta1, step), bias2 = 1 - Math.Pow(beta2, step);
        if (weightDecay != 0) data.mul_(1 - lr * weightDecay);                 // x 1 when 0: skipped, the same bits
        expAvg.mul_(beta1).add_(grad, alpha: 1 - beta1);
        expAvgSq.mul_(beta2).addcmul_(grad, grad, value: 1 - beta2);
        var denominator = (expAvgSq.sqrt() / Math.Sqrt(bias2)).add_(eps);
        data.addcdiv_(expAvg, denominator, value: -lr / bias1);
    }

    /// <summary>
    /// The step in one launch, reading the learning rate and the gradient's scale from <paramref name="lrAndScale"/>
    /// (fp32 [2] on the device: lr, and the clip coefficient that multiplies every gradient first, 1 for none), so that
    /// neither passes through the host. The arithmetic is the reference's, op for op; the learning rate is fp32 here
    /// where the reference forms 1 - lr wd and -lr / (1 - beta1^t) in double, which can move those by an fp32 ulp.
    /// Throws (naming the tensor) where a tensor is not fp32, contiguous and on the runtime's device: the reference
    /// would need the learning rate on the host.
    /// </summary>
    public static void Fused(KernelRuntime kernels, Tensor data, Tensor grad, Tensor expAvg, Tensor expAvgSq, Tensor lrAndScale,
                             long step, double weightDecay, double beta1, double beta2, double eps)
    {
        CheckRun(data, grad, expAvg, expAvgSq, step);
        foreach (var (t, name) in new[] { (data, nameof(data)), (grad, nameof(grad)), (expAvg, nameof(expAvg)), (expAvgSq, nameof(expAvgSq)), (lrAndScale, nameof(lrAndScale)) })
            if (!OnDevice(kernels, t)) throw new ArgumentException($"AdamW kernel: {name} is {t.dtype} on {t.device} ({(t.is_contiguous() ? "" : "not ")}contiguous): expected contiguous fp32 on cuda:{kernels.Device}", name);
        if (lrAndScale.numel() != 2) throw new ArgumentException($"AdamW kernel: lrAndScale has {lrAndScale.numel()} elements, expected 2 (lr, gradient scale)", nameof(lrAndScale));
        double bias1 = 1 - Math.Pow(beta1, step), bias2 = 1 - Math.Pow(beta2, step);
        float inverseSqrtBias2 = 1f / (float)Math.Sqrt(bias2); // libtorch's CUDA division by a scalar: times its fp32 reciprocal
        long n = data.numel();
        kernels.Function(Source, "adamw_step_f32").Launch((Elementwise.Blocks(n), 1), Elementwise.Threads, 0,
            data, grad, expAvg, expAvgSq, lrAndScale, n, (float)weightDecay, (float)beta1, (float)(1 - beta1), (float)beta2, (float)(1 - beta2),
            inverseSqrtBias2, (float)eps, (float)bias1);
    }

    /// <summary>(lr, gradient scale) as fp32 [2] on <paramref name="device"/>, written by fills: a copy from the host
    /// would make libtorch wait for the stream.</summary>
    public static Tensor LearningRateAndScale(double lr, double scale, Device device)
    {
        var t = full(2, scale, ScalarType.Float32, device);
        using var first = t[0];
        first.fill_(lr);
        return t;
    }

    static bool OnDevice(KernelRuntime kernels, Tensor t) =>
        t.device_type == DeviceType.CUDA && t.device_index == kernels.Device && t.dtype == ScalarType.Float32 && t.is_contiguous();

    static bool Handles(KernelRuntime kernels, params Tensor[] run) => run.All(t => OnDevice(kernels, t));

    static void CheckRun(Tensor data, Tensor grad, Tensor expAvg, Tensor expAvgSq, long step)
    {
        if (step < 1) throw new ArgumentException($"AdamW: step {step}, expected 1 or more (the bias corrections' t)", nameof(step));
        foreach (var (t, name) in new[] { (data, nameof(data)), (grad, nameof(grad)), (expAvg, nameof(expAvg)), (expAvgSq, nameof(expAvgSq)) })
        {
            if (t.dim() != 1 || t.numel() != data.numel())
                throw new ArgumentException($"AdamW: {name} is [{string.Join(", ", t.shape)}], expected flat [{data.numel()}] as data", name);
            if (t.dtype != data.dtype || t.device_type != data.device_type || t.device_index != data.device_index)
                throw new ArgumentException($"AdamW: {name} is {t.dtype} on {t.device}, expected {data.dtype} on {data.device} as data", name);
        }
    }

    const long Step = 10;
    const double Lr = 3e-3, Beta1 = 0.9, Beta2 = 0.95, Eps = 1e-8;

    /// <summary>The self-check: one step at t = 10 from random state, p, m and v of the kernel against the reference's,
    /// on 1001 elements (with weight decay and a gradient scale of 0.37; without either), 16M's decayed parameters
    /// (tied embeddings: 15,568,896), 162M's decayed parameters (162,201,600) and its vectors (20,736, no decay).</summary>
    public static IEnumerable<KernelCheck> Checks(KernelRuntime kernels)
    {
        var device = torch.device(DeviceType.CUDA, kernels.Device);
        (string Name, long N, double WeightDecay, double Scale)[] cases =
            [("odd 1001, decay 0.1, scale 0.37", 1001, 0.1, 0.37), ("odd 1001, no decay", 1001, 0, 1), ("16M matrices 15,568,896", 15_568_896, 0.1, 1),
             ("162M matrices 162,201,600", 162_201_600, 0.1, 1), ("162M vectors 20,736", 20_736, 0, 1)];
        foreach (var c in cases)
            foreach (var check in Check(kernels, device, c.Name, c.N, c.WeightDecay, c.Scale))
                yield return check;
    }

    // Tolerance, relative to the reference's largest magnitude: the same fp32 ops in the same order, except that the
    // kernel's 1 - lr wd and -lr / bias1 start from an fp32 lr (an ulp of either moves p by about an ulp): 4 ulp, 2^-21.
    static List<KernelCheck> Check(KernelRuntime kernels, Device device, string name, long n, double weightDecay, double scale)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        manual_seed(n);
        var p = randn(n, device: device) * 0.02;
        var g = randn(n, device: device) * 1e-3;
        var m = randn(n, device: device) * 1e-3;
        var v = randn(n, device: device).square() * 1e-6;
        var (pReference, mReference, vReference) = (p.clone(), m.clone(), v.clone());
        Reference(pReference, g.clone().mul_(scale), mReference, vReference, Step, Lr, weightDecay, Beta1, Beta2, Eps); // clipping scales g in place
        Fused(kernels, p, g, m, v, LearningRateAndScale(Lr, scale, device), Step, weightDecay, Beta1, Beta2, Eps);
        const double tolerance = 1.0 / (1 << 21);
        return [KernelCheck.Compare("adamw", name, "p", p, pReference, tolerance),
                KernelCheck.Compare("adamw", name, "m", m, mReference, tolerance),
                KernelCheck.Compare("adamw", name, "v", v, vReference, tolerance)];
    }
}
