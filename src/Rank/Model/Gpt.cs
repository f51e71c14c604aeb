// The paper's decoder: rotary positions, SwiGLU MLP, pre-LN LayerNorm, qk-layernorm per head, no biases, no dropout.
using Kernels.Ops;
using Rank.Parallel;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.Model;

/// <summary>
/// GPT body: token ids [B, T] -> final hidden states [B, T, d] (after the final LayerNorm). The head is not applied
/// here: <see cref="OutputEmbedding"/> E [V, d] goes to the OEC library, which forms the logits, the loss and the
/// statistics, and centres E after the optimizer step. Initialisation as in the paper's code (a modified nanoGPT).
/// The constructor builds the whole model; a parallel layout narrows it afterwards (Rank.Parallel.Parallelize).
/// </summary>
public sealed class Gpt : nn.Module<Tensor, Tensor>
{
    readonly Embedding wte;
    readonly ModuleList<Block> h;
    readonly LayerNorm ln_f;
    Parameter? lm_head; // [V, d]; null with weight tying, where E is wte.weight

    public int VocabSize { get; }
    public int Dim { get; }
    /// <summary>The dtype of the matmuls and attention (Float32 or BFloat16), and of their outputs (<see cref="Mixed"/>).</summary>
    public ScalarType Compute => Weights.Compute;

    /// <summary>The weights in the compute dtype, cast once per optimizer step; whoever changes the parameters in place
    /// (the optimizer step, centering, loading) calls its Invalidate.</summary>
    public ComputeWeights Weights { get; }

    /// <param name="seed">Seeds the initialisation (after the modules are built). Null: the generator as it is.</param>
    /// <param name="compute">The dtype of the matmuls and of attention (<see cref="Mixed"/>); the parameters are fp32 either way.</param>
    public Gpt(ModelOptions options, int vocabSize, int maxSequenceLength, long? seed = null, ScalarType compute = ScalarType.Float32) : base("gpt")
    {
        var o = options.Resolve();
        int layers = o.NLayer!.Value, d = o.DModel!.Value, heads = o.NHead!.Value;
        VocabSize = o.PaddedVocab(vocabSize);
        Dim = d;
        Weights = new ComputeWeights(compute);
        wte = nn.Embedding(VocabSize, d);
        h = new ModuleList<Block>(Enumerable.Range(0, layers).Select(_ => new Block(d, heads, maxSequenceLength, Weights)).ToArray());
        ln_f = nn.LayerNorm([d], bias: false);
        if (!o.WeightTying) lm_head = nn.Parameter(empty(VocabSize, d));
        RegisterComponents();
        Lookup = idx => wte.forward(idx);
        if (seed is long s) manual_seed(s);
        Initialise(layers);
    }

    /// <summary>E [V, d] (a shard's [V/tp, d]): the output embedding, rows e_i. The input embedding's matrix when weights are tied.</summary>
    public Parameter OutputEmbedding => lm_head ?? wte.weight!;

    /// <summary>The input embedding wte [V, d] (a shard's [V/tp, d]).</summary>
    public Embedding TokenEmbedding => wte;

    /// <summary>Blocks: n_layer.</summary>
    public int Layers => h.Count;

    /// <summary>Names of the parameters of which each rank of a vocabulary-parallel group holds other rows (the embeddings);
    /// empty until <see cref="KeepVocabularyRows"/>.</summary>
    public IReadOnlySet<string> ShardedNames { get; private set; } = new HashSet<string>();

    /// <summary>Token ids [B, T] -> embeddings [B, T, d]: wte's lookup, unless a parallel layout replaced it.</summary>
    public Func<Tensor, Tensor> Lookup { get; set; }

    /// <summary>Called during backward at boundary k = 0..n_layer (the input of block k; n_layer: the input of ln_f),
    /// once the gradients of everything after it are final (<see cref="Boundary"/>). Null: no boundaries in the graph.</summary>
    public Action<int>? BoundaryReached { get; set; }

    /// <summary>Told where the forward's phases end, when the step is profiled: the embedding, block 0's attention and
    /// MLP (block 0 stands for every block), the other blocks with ln_f. Null: not profiled.</summary>
    public Action<string>? PhaseEnded { get; set; }

    /// <summary>The blocks that keep only their input and recompute their forward in backward (train.activation_checkpointing).</summary>
    public ActivationCheckpointing Checkpointing { get; set; } = ActivationCheckpointing.None;

    /// <summary>The fused CUDA kernels (train.fused_kernels), or null: the TorchSharp ops they replace, which are
    /// their reference and what the CPU always runs. Kept in <see cref="Weights"/>, which every block's modules share.</summary>
    public Kernels.KernelRuntime? Kernels { get => Weights.FusedKernels; set => Weights.FusedKernels = value; }

    /// <summary>Gathers and releases each block's parameters around its forwards when a sharding keeps them elsewhere
    /// (ZeRO-3, which then recomputes every block). Null: the parameters are always here.</summary>
    public IBlockParameters? BlockParameters { get; set; }

    public override Tensor forward(Tensor idx)
    {
        var x = Lookup(idx);                                           // [B, T, d]
        PhaseEnded?.Invoke("embedding");
        for (int k = 0; k < h.Count; k++) x = ForwardBlock(k, Mark(x, k));
        x = LayerNormOp.Apply(Kernels, Mark(x, h.Count), ln_f.weight!, 1e-5); // [B, T, d]
        PhaseEnded?.Invoke("blocks 1.. and ln_f");
        return x;
    }

    // Block k of the forward: recomputed in backward when checkpointed (always when its parameters are sharded and a
    // backward will follow), otherwise with its parameters gathered for the forward alone or always present.
    Tensor ForwardBlock(int k, Tensor x)
    {
        bool backward = x.requires_grad && is_grad_enabled();
        if (backward && (Checkpointing.Covers(k) || BlockParameters is not null)) return Recomputed.Apply(h[k], x, recomputeFailure, BlockParameters, k);
        BlockParameters?.Gather(k, forBackward: false);
        try { return h[k].Forward(x, k == 0 ? PhaseEnded : null); }
        finally { BlockParameters?.Release(k); }
    }

    /// <summary>After backward: throws what failed inside a block's recomputation (not thrown through libtorch's backward).</summary>
    public void ThrowIfRecomputeFailed(long step)
    {
        if (recomputeFailure.Value is { } failure)
        {
            recomputeFailure.Value = null;
            throw new InvalidOperationException($"step {step}: a block's recomputation in backward failed: {failure.Message}", failure);
        }
    }

    readonly System.Runtime.CompilerServices.StrongBox<Exception?> recomputeFailure = new();

    Tensor Mark(Tensor x, int boundary) =>
        BoundaryReached is { } reached && x.requires_grad ? Boundary.Mark(x, () => reached(boundary)) : x;

    /// <summary>
    /// Keeps rows [offset, offset + rows) of both embeddings (of the one matrix when tied): a vocabulary shard, [rows, d]
    /// each, whose values are those rows of the whole model's initialisation. The lookup stays wte's: a shard's lookup
    /// of ids outside its rows is the layout's to provide (<see cref="Lookup"/>).
    /// </summary>
    public void KeepVocabularyRows(long offset, long rows)
    {
        if (ShardedNames.Count > 0) throw new InvalidOperationException("the embeddings are already a vocabulary shard");
        wte.weight = Rows(wte.weight!, offset, rows);
        if (lm_head is not null)
        {
            lm_head = Rows(lm_head, offset, rows);
            ConditionallyRegisterParameter("lm_head", lm_head);
        }
        ShardedNames = lm_head is null ? new HashSet<string> { "wte.weight" } : new HashSet<string> { "wte.weight", "lm_head" };
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Weights.Dispose();
        base.Dispose(disposing);
    }

    static Parameter Rows(Parameter whole, long offset, long rows)
    {
        using var noGrad = no_grad();
        var part = nn.Parameter(whole.narrow(0, offset, rows).clone());
        whole.Dispose();
        return part;
    }

    void Initialise(int layers)
    {
        using var noGrad = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith("ln_1.weight") || name.EndsWith("ln_2.weight") || name.EndsWith("layernorm.weight") || name == "ln_f.weight")
                nn.init.ones_(p);
            else if (name.EndsWith("attn.c_proj.weight"))
                nn.init.normal_(p, 0, 0.02 / Math.Sqrt(2 * layers)); // residual projection of attention, per GPT-2
            else if (name == "wte.weight" && lm_head is not null)
                nn.init.normal_(p, 0, 1 / Math.Sqrt(Dim));            // embeddings: std 1/sqrt(d)
            else
                nn.init.xavier_normal_(p);                            // linear layers and the head; a tied matrix too,
                                                                      // since the paper's code initialises the head last
        }
    }
}

/// <summary>Pre-LN transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).</summary>
public sealed class Block : nn.Module<Tensor, Tensor>
{
    readonly LayerNorm ln_1, ln_2;
    readonly CausalSelfAttention attn;
    readonly SwiGlu mlp;
    readonly ComputeWeights weights;

    /// <param name="weights">The model's compute-dtype weights, which also carry its fused kernels (read at each forward).</param>
    public Block(int d, int heads, int maxSequenceLength, ComputeWeights weights) : base("block")
    {
        this.weights = weights;
        ln_1 = nn.LayerNorm([d], bias: false);
        attn = new CausalSelfAttention(d, heads, maxSequenceLength, weights);
        ln_2 = nn.LayerNorm([d], bias: false);
        mlp = new SwiGlu(d, weights);
        RegisterComponents();
    }

    /// <summary>x [B, T, d] fp32 (the residual stream) -> fp32: a branch's output in the compute dtype promotes to fp32 in the add.</summary>
    public override Tensor forward(Tensor x) => Forward(x, null);

    /// <summary>As forward, telling <paramref name="phaseEnded"/> where attention and the MLP end (a profiled step).</summary>
    public Tensor Forward(Tensor x, Action<string>? phaseEnded)
    {
        using var scope = NewDisposeScope();
        x = x + attn.forward(LayerNormOp.Apply(weights.FusedKernels, x, ln_1.weight!, 1e-5));
        phaseEnded?.Invoke("block 0: attention");
        x = x + mlp.forward(LayerNormOp.Apply(weights.FusedKernels, x, ln_2.weight!, 1e-5));
        phaseEnded?.Invoke("block 0: MLP");
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>Causal self-attention with LayerNorm on queries and keys per head and rotary positions.</summary>
public sealed class CausalSelfAttention : nn.Module<Tensor, Tensor>
{
    readonly Linear c_attn, c_proj;
    readonly LayerNorm q_layernorm, k_layernorm;
    readonly Rotary rotary;
    readonly int heads;
    readonly ComputeWeights weights;

    public CausalSelfAttention(int d, int heads, int maxSequenceLength, ComputeWeights weights) : base("attn")
    {
        (this.heads, this.weights) = (heads, weights);
        c_attn = nn.Linear(d, 3 * d, hasBias: false);
        c_proj = nn.Linear(d, d, hasBias: false);
        q_layernorm = nn.LayerNorm([d / heads], bias: false);
        k_layernorm = nn.LayerNorm([d / heads], bias: false);
        rotary = new Rotary(d / heads, maxSequenceLength);
        RegisterComponents();
    }

    /// <summary>x [B, T, C] fp32 -> [B, T, C] in the compute dtype. q and k leave their LayerNorm in fp32 and rotate
    /// in fp32 (autocast runs layer_norm in fp32), v stays in the compute dtype.</summary>
    public override Tensor forward(Tensor x)
    {
        long B = x.shape[0], T = x.shape[1], C = x.shape[2];
        var qkv = Mixed.Linear(c_attn, x, weights).view(B, T, 3, heads, C / heads);                      // [B, T, 3, nh, hs]
        var (cos, sin) = rotary.Follow(ScalarType.Float32, x.device);
        var q = QkNormRotaryOp.Apply(weights.FusedKernels, qkv, 0, q_layernorm.weight, cos, sin);          // [B, nh, T, hs] fp32
        var k = QkNormRotaryOp.Apply(weights.FusedKernels, qkv, 1, k_layernorm.weight, cos, sin);
        var y = Mixed.Attention(q, k, qkv.select(2, 2).transpose(1, 2), weights.Compute);               // [B, nh, T, hs]
        return Mixed.Linear(c_proj, y.transpose(1, 2).reshape(B, T, C), weights);
    }
}

/// <summary>
/// Rotary position embedding on the first half of each head's dimensions, in interleaved pairs, base 10000
/// (as rotary-embedding-torch with dim = hs/2, which the paper's code uses).
/// </summary>
public sealed class Rotary : nn.Module
{
    readonly Tensor cos, sin;    // [T_max, hs/2] fp32 on the CPU, each frequency repeated for its pair; sin with the
                                 // sign of its place in the pair (-sin, +sin), so that a swap of the pair rotates
    (Tensor Cos, Tensor Sin)? here; // the same tables where the inputs are, in their dtype (Follow); a tuple, so that
                                    // RegisterComponents does not take it for a buffer

    public Rotary(int headDim, int maxSequenceLength) : base("rotary")
    {
        int rotated = headDim / 2;
        var inverseFrequency = 1.0 / pow(10000.0, arange(0, rotated, 2, dtype: float32) / rotated); // [hs/4]
        var angles = outer(arange(maxSequenceLength, dtype: float32), inverseFrequency);             // [T_max, hs/4]
        angles = angles.repeat_interleave(2, dim: 1);                                                // [T_max, hs/2]
        cos = angles.cos();
        sin = angles.sin() * tensor(new float[] { -1, 1 }).repeat(rotated / 2);                   // (-sin, +sin) per pair
        register_buffer("cos", cos, persistent: false); // not in the state dict or checkpoints, and (TorchSharp)
        register_buffer("sin", sin, persistent: false); // not moved by Module.to(): Follow moves them
    }

    /// <summary>The cos table Follow last returned, [T_max, hs/2]: where and in what dtype the tables are now.</summary>
    public Tensor Cos => here?.Cos ?? cos;

    /// <summary>x [B, nh, T, hs] -> same shape, positions 0..T-1: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin) per
    /// pair (<see cref="QkNormRotaryOp.Rotate"/>, which the fused qk-LayerNorm's reference shares).</summary>
    public Tensor Apply(Tensor x)
    {
        var (c, s) = Follow(x.dtype, x.device);
        return QkNormRotaryOp.Rotate(x, c, s);
    }

    /// <summary>The tables [T_max, hs/2] in <paramref name="dtype"/> on <paramref name="device"/>. They move once, at
    /// the first use on another device or in another dtype, not at every call: a host-to-GPU copy per call would stall
    /// the stream four times a layer. Converted from the fp32 CPU tables, so a detour through bf16 loses nothing.</summary>
    public (Tensor Cos, Tensor Sin) Follow(ScalarType dtype, Device device)
    {
        bool Fits(Tensor t) => t.device_type == device.type && t.device_index == device.index && t.dtype == dtype;
        if (here is { } moved && Fits(moved.Cos)) return moved;
        DisposeMoved();
        if (Fits(cos)) return (cos, sin);
        here = (cos.to(dtype, device).DetachFromDisposeScope(), sin.to(dtype, device).DetachFromDisposeScope());
        return here.Value;
    }

    void DisposeMoved()
    {
        here?.Cos.Dispose();
        here?.Sin.Dispose();
        here = null;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) DisposeMoved();
        base.Dispose(disposing);
    }
}

/// <summary>SwiGLU MLP: W_2(silu(W x) * V x), hidden 256 * ceil((8d/3) / 256).</summary>
public sealed class SwiGlu : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // the paper's names: RegisterComponents makes them the parameters' names in checkpoints (mlp.W.weight)
    readonly Linear W, V, W_2;
#pragma warning restore IDE1006
    readonly ComputeWeights weights;

    public SwiGlu(int d, ComputeWeights weights) : base("mlp")
    {
        int hidden = HiddenSize(d);
        this.weights = weights;
        W = nn.Linear(d, hidden, hasBias: false);
        V = nn.Linear(d, hidden, hasBias: false);
        W_2 = nn.Linear(hidden, d, hasBias: false);
        RegisterComponents();
    }

    public static int HiddenSize(int d) => 256 * ((8 * d / 3 + 255) / 256);

    /// <summary>x [B, T, d] fp32 -> [B, T, d] in the compute dtype; silu(W x) * V x [B, T, hidden] in it too (autocast
    /// lists neither): the fused kernels when the model has them (one rounding), else silu and the product (<see cref="SwiGluOp"/>).</summary>
    public override Tensor forward(Tensor x) =>
        Mixed.Linear(W_2, SwiGluOp.Apply(weights.FusedKernels, Mixed.Linear(W, x, weights), Mixed.Linear(V, x, weights)), weights);
}

/// <summary>
/// Mixed precision without autocast, with autocast's dtype flow (torch.autocast(bfloat16) on the same model): a matmul
/// or attention casts its operands to the compute dtype and returns its result in it; LayerNorm takes fp32 (q and k
/// are cast to fp32 for theirs in Kernels.Ops.QkNormRotaryOp) and returns fp32; every other op runs in its inputs' dtype with type promotion, so the residual
/// stream (fp32 + bf16) stays fp32. The casts are differentiable, so the backward runs the matmul in the compute dtype
/// and the gradient reaches the fp32 weights (the master weights) in fp32. With compute = Float32 every cast is a no-op
/// that returns the tensor itself (libtorch's to() aliases when nothing changes): fp32 is bit for bit the plain computation.
/// </summary>
public static class Mixed
{
    /// <summary>x [.., in] (any float dtype) times layer.weight^T [in, out] -> [.., out] in the compute dtype.</summary>
    public static Tensor Linear(Linear layer, Tensor x, ComputeWeights weights) =>
        nn.functional.linear(x.to_type(weights.Compute), weights.Of(layer.weight!));

    /// <summary>Causal attention, q, k, v [B, nh, T, hs] -> [B, nh, T, hs] in <paramref name="compute"/>. The kernel's
    /// softmax keeps its running max and sum in fp32 whatever the input dtype (flash attention's online softmax).</summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, ScalarType compute) =>
        nn.functional.scaled_dot_product_attention(q.to_type(compute), k.to_type(compute), v.to_type(compute), is_casual: true);
}

/// <summary>
/// The weights in the compute dtype, each cast once per optimizer step and reused by every micro-batch and by the
/// backward, as autocast's weight-cast cache does within one region. A use goes through <see cref="Of"/>: an autograd
/// node of its own whose backward hands the gradient to the fp32 master weight in fp32 (a node made at each use, not
/// one shared cast, so that its place in the backward's order is that of the matmul using it, as the layer boundaries
/// of Rank.Parallel.Boundary require). In fp32 nothing is cached: Of returns the weight itself.
/// </summary>
public sealed class ComputeWeights(ScalarType compute) : IDisposable
{
    readonly Dictionary<Tensor, Tensor> copies = new(ReferenceEqualityComparer.Instance);

    public ScalarType Compute => compute;

    /// <summary>The model's fused CUDA kernels (<see cref="Gpt.Kernels"/>), here because every module that uses them holds these weights.</summary>
    public Kernels.KernelRuntime? FusedKernels { get; set; }

    /// <summary>weight [.., ..] fp32 -> the same in the compute dtype, differentiable to the weight.</summary>
    public Tensor Of(Tensor weight) =>
        weight.dtype == compute ? weight : Kernels.AutogradOutputs.Apply(slot => ToMaster.apply(weight, new Cached(Copy(weight)), slot));

    /// <summary>The cached copy of weight in the compute dtype, without gradient (the weight itself in fp32).</summary>
    public Tensor Copy(Tensor weight)
    {
        if (weight.dtype == compute) return weight;
        if (!copies.TryGetValue(weight, out var copy))
        {
            using var noGrad = no_grad();
            copies[weight] = copy = weight.detach().to_type(compute).DetachFromDisposeScope();
        }
        return copy;
    }

    /// <summary>Drops the copy of one weight: it is about to be freed (ZeRO-3 releasing a block).</summary>
    public void Forget(Tensor weight)
    {
        if (copies.Remove(weight, out var copy)) copy.Dispose();
    }

    /// <summary>Drops the copies: the weights changed (an optimizer step, centering, a checkpoint loaded).</summary>
    public void Invalidate()
    {
        foreach (var copy in copies.Values) copy.Dispose();
        copies.Clear();
    }

    public void Dispose() => Invalidate();

    /// <summary>A copy passed to the autograd function as data, not as an input it would differentiate.</summary>
    sealed record Cached(Tensor Copy);

    /// <summary>Forward: the cached copy (the master weight is the input). Backward: the gradient in the master's dtype.</summary>
    sealed class ToMaster : torch.autograd.SingleTensorFunction<ToMaster>
    {
        public override string Name => "CachedWeightCast";

        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            Kernels.AutogradOutputs.Fill(ctx, vars); // its placeholder would hold a second copy per use
            ctx.save_data("dtype", ((Tensor)vars[0]).dtype);
            return ((Cached)vars[1]).Copy.detach();
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) =>
            Kernels.BackwardTensors.Run(gradOutput, () => [gradOutput.to_type((ScalarType)ctx.get_data("dtype")), null!, null!]);
    }
}
