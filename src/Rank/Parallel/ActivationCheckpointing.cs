// Activation checkpointing: a block keeps only its input through the forward and runs its forward again in backward.
using System.Runtime.CompilerServices;
using Rank.Model;
using Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.Parallel;

/// <summary>
/// train.activation_checkpointing: which blocks keep only their input [B, T, d] from the forward (instead of every
/// activation autograd saves inside them) and recompute their forward during backward. The model has no dropout and
/// its ops are deterministic, so the recomputed forward, and with it every gradient, is the same bits (tested).
/// </summary>
public sealed record ActivationCheckpointing(int Every)
{
    public static readonly ActivationCheckpointing None = new(0);

    /// <summary>"none", "all" (every block) or "every:k" (blocks 0, k, 2k, ...).</summary>
    public static ActivationCheckpointing Parse(string text)
    {
        if (text.Equals("none", StringComparison.OrdinalIgnoreCase)) return None;
        if (text.Equals("all", StringComparison.OrdinalIgnoreCase)) return new(1);
        if (text.StartsWith("every:", StringComparison.OrdinalIgnoreCase) && int.TryParse(text.AsSpan(6), out int k) && k >= 1) return new(k);
        throw new ArgumentException($"train.activation_checkpointing = '{text}': expected none, all, or every:k with k >= 1 (blocks 0, k, 2k, ...)");
    }

    /// <summary>Whether block <paramref name="block"/> is recomputed in backward.</summary>
    public bool Covers(int block) => Every > 0 && block % Every == 0;

    public override string ToString() => Every switch { 0 => "none", 1 => "all", _ => $"every:{Every}" };
}

/// <summary>
/// A block whose forward runs without recording a graph and whose backward runs it again with one (PyTorch's reentrant
/// torch.utils.checkpoint): forward saves only its input x [B, T, d]; backward recomputes y = block(x) from a leaf
/// copy of x and back-propagates the output's gradient through it, which accumulates the block's parameter gradients
/// where they always go and yields x's gradient. <see cref="Recomputed.Hooks"/> lets a parameter sharding gather the
/// block's parameters around each of its two forwards (ZeRO-3).
/// </summary>
public sealed class Recomputed : torch.autograd.SingleTensorFunction<Recomputed>
{
    public override string Name => "RecomputedBlock";

    /// <summary>x [B, T, d] -> block(x), recomputed in backward; <paramref name="hooks"/> null: the parameters stay
    /// where they are. What fails in backward goes into <paramref name="failure"/> (an exception must not cross
    /// libtorch's frames), and the input's gradient is then zero. TorchSharp's placeholder for the output is slimmed
    /// (Kernels.AutogradOutputs), so that a checkpointed block holds its input alone.</summary>
    public static Tensor Apply(Block block, Tensor x, StrongBox<Exception?> failure, IBlockParameters? hooks = null, int index = 0) =>
        AutogradOutputs.Apply(slot => apply(x, new Call(block, failure, hooks, index), slot));

    sealed record Call(Block Block, StrongBox<Exception?> Failure, IBlockParameters? Hooks, int Index);

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        var (x, call) = ((Tensor)vars[0], (Call)vars[1]);
        AutogradOutputs.Fill(ctx, vars);
        ctx.save_for_backward([x]);
        ctx.save_data("call", call);
        call.Hooks?.Gather(call.Index, forBackward: false);
        try { return call.Block.forward(x); }                   // autograd is off inside a Function's forward
        finally { call.Hooks?.Release(call.Index); }
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) => BackwardTensors.Run(gradOutput, () =>
    {
        var call = (Call)ctx.get_data("call");
        using var input = ctx.get_saved_variables()[0];
        try
        {
            call.Hooks?.Gather(call.Index, forBackward: true);
            Tensor gradInput;
            using (var scope = NewDisposeScope())
            using (enable_grad())
            {
                var x = input.detach().requires_grad_(true);      // [B, T, d], a leaf: its .grad is the block's input gradient
                var y = call.Block.forward(x);
                y.backward([gradOutput]);
                gradInput = x.grad!.detach().MoveToOuterDisposeScope();
            }
            call.Hooks?.Backward(call.Index);
            call.Hooks?.Release(call.Index);
            return [gradInput, null!, null!];
        }
        catch (Exception e)
        {
            call.Failure.Value ??= e;
            return [zeros_like(input), null!, null!];
        }
    });
}

/// <summary>Where a block's parameters come from around its forwards (ZeRO-3 keeps them sharded in between).</summary>
public interface IBlockParameters
{
    /// <summary>Before block <paramref name="block"/>'s forward (its first, or its recomputation in backward).</summary>
    void Gather(int block, bool forBackward);
    /// <summary>After the first forward: the block's parameters are not needed until its backward.</summary>
    void Release(int block);
    /// <summary>After the block's backward: its parameter gradients are final for this micro-batch.</summary>
    void Backward(int block);
}
