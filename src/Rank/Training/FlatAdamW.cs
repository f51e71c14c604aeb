// AdamW over flat buffers: a group's parameters are views of one buffer and their gradients views of another, so a
// step is five kernels per group (one with the fused kernels) where TorchSharp's AdamW launches about ten per parameter.
using Kernels;
using Kernels.Ops;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.Training;

/// <summary>
/// The arithmetic of TorchSharp's (and PyTorch's single-tensor) AdamW, element for element in the same order, so its
/// results are the same bits (tested); what differs is the launches: for GPT-2 small's 111 parameters TorchSharp's
/// loop makes about 1,000 kernel launches a step, which on a GPU costs milliseconds of host time while the kernels
/// themselves take less (PyTorch's default on CUDA is the multi-tensor implementation for the same reason). Built
/// after the model is on its device: <c>p.set_</c> makes each parameter a view of its group's buffer, and each
/// gradient is preset to a view of the gradient buffer, into which libtorch's gradient accumulation adds in place.
/// Every parameter is stepped every step (a parameter without gradient sees zeros; in this GPT every one has one).
/// </summary>
public sealed class FlatAdamW : IOptimizer
{
    sealed class Group(Tensor data, Tensor grad, double weightDecay, IReadOnlyList<(Parameter P, long Offset)> members)
    {
        public readonly Tensor Data = data, Grad = grad;                           // [n] each: the group's parameters, gradients
        public readonly Tensor ExpAvg = zeros_like(data), ExpAvgSq = zeros_like(data); // [n] each: AdamW's moments
        public readonly double WeightDecay = weightDecay;
        public readonly IReadOnlyList<(Parameter P, long Offset)> Members = members;
        public long Step;
    }

    readonly List<Group> groups = [];
    readonly double beta1, beta2, eps;

    public FlatAdamW(IEnumerable<(IReadOnlyList<Parameter> Parameters, double WeightDecay)> parameterGroups, double beta1, double beta2, double eps)
    {
        (this.beta1, this.beta2, this.eps) = (beta1, beta2, eps);
        using var noGrad = no_grad();
        foreach (var (ps, weightDecay) in parameterGroups)
        {
            if (ps.Count == 0) continue;
            if (ps.Any(p => p.dtype != ps[0].dtype || p.device_type != ps[0].device_type || p.device_index != ps[0].device_index))
                throw new ArgumentException($"FlatAdamW: a group's parameters must share dtype and device, got {string.Join(", ", ps.Select(p => $"{p.dtype} on {p.device}").Distinct())}");
            long offset = 0;
            var members = ps.Select(p => { var at = (p, offset); offset += p.numel(); return at; }).ToList();
            var data = empty(offset, ps[0].dtype, ps[0].device);
            var grad = zeros(offset, ps[0].dtype, ps[0].device);
            foreach (var (p, at) in members)
            {
                using var slice = data.narrow(0, at, p.numel()).view(p.shape);
                slice.copy_(p);
                p.set_(slice);                                                 // p now lives in data (returns p: not disposed)
                p.grad = grad.narrow(0, at, p.numel()).view(p.shape);          // accumulated into in place
            }
            groups.Add(new Group(data, grad, weightDecay, members));
        }
    }

    public HeldBytes Held => new(groups.Sum(g => HeldBytes.Of(g.Data)), groups.Sum(g => HeldBytes.Of(g.Grad)),
                                 groups.Sum(g => HeldBytes.Of(g.ExpAvg) + HeldBytes.Of(g.ExpAvgSq)));

    /// <summary>The fused kernels (the trainer passes Model.Kernels): a group's step is one launch of the AdamW kernel
    /// when its buffers are fp32 on the runtime's CUDA device (<see cref="AdamWOp"/>); null: <see cref="Update"/>.</summary>
    public KernelRuntime? Kernels { get; init; }

    /// <summary>Steps taken (the bias correction's t).</summary>
    public long Steps => groups.Count == 0 ? 0 : groups[0].Step;

    /// <summary>One AdamW step at learning rate <paramref name="lr"/>, decoupled weight decay per group.</summary>
    public void Step(double lr)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var g in groups) AdamWOp.Apply(Kernels, g.Data, g.Grad, g.ExpAvg, g.ExpAvgSq, ++g.Step, lr, g.WeightDecay, beta1, beta2, eps);
    }

    /// <summary>Every gradient to zero, in place (the views stay).</summary>
    public void ZeroGrad()
    {
        foreach (var g in groups) g.Grad.zero_();
    }

    /// <summary>torch's clip_grad_norm_ over all the gradients: the L2 norm of the whole gradient, and when
    /// <paramref name="maxNorm"/> &gt; 0 every gradient scaled by min(1, maxNorm / (norm + 1e-6)). Returns the norm,
    /// read on the host (one wait for the device, where the step has just waited for its loss; the fused AdamW kernel
    /// could take the coefficient from device memory, but the step returns the norm and ZeRO and the vocabulary
    /// layout clip alike, so the kernel runs with gradient scale 1 after this).</summary>
    public double ClipGradNorm(double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        double norm = stack(groups.Select(g => g.Grad.norm()).ToArray()).norm().item<float>();
        double coefficient = maxNorm / (norm + 1e-6);
        if (maxNorm > 0 && coefficient < 1)
            foreach (var g in groups) g.Grad.mul_(coefficient);
        return norm;
    }

    /// <summary>The moments of one parameter: views [p.shape] of its group's buffers.</summary>
    public (Tensor ExpAvg, Tensor ExpAvgSq) StateOf(Parameter p)
    {
        foreach (var g in groups)
            foreach (var (member, offset) in g.Members)
                if (ReferenceEquals(member, p))
                    return (g.ExpAvg.narrow(0, offset, p.numel()).view(p.shape), g.ExpAvgSq.narrow(0, offset, p.numel()).view(p.shape));
        throw new ArgumentException("FlatAdamW.StateOf: not a parameter of this optimizer");
    }

    /// <summary>The moments of every parameter, whole, as one chunk file (<see cref="OptimizerCheckpoint"/>); names from
    /// <paramref name="named"/>, the model's named parameters.</summary>
    public void Save(string path, IEnumerable<(string Name, Parameter P)> named) =>
        OptimizerCheckpoint.Write(path, Steps, Chunks(named));

    /// <summary>Every parameter's moments from the chunk files of a checkpoint, whichever ranks and stages wrote them.</summary>
    public void Load(IReadOnlyList<string> files, IEnumerable<(string Name, Parameter P)> named)
    {
        long step = OptimizerCheckpoint.Read(files, Chunks(named).ToList());
        foreach (var g in groups) g.Step = step;
    }

    IEnumerable<MomentChunk> Chunks(IEnumerable<(string Name, Parameter P)> named) =>
        named.Select(n => { var (m, v) = StateOf(n.P); return new MomentChunk(n.Name, n.P.numel(), 0, m.view(-1), v.view(-1)); });

    public void Dispose()
    {
        foreach (var g in groups) // the parameters keep their storage alive through their own references
            foreach (var t in new[] { g.ExpAvg, g.ExpAvgSq, g.Grad, g.Data }) t.Dispose();
    }
}
