// The layer-boundary mark in a model's graph: an autograd identity whose backward says that the gradients after it are final.
using Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.Parallel;

/// <summary>
/// Identity in the forward pass; in the backward pass, calls its action when the gradient of its input is complete,
/// then passes the gradient on unchanged. That gradient is complete only after the backward of every operation that
/// read the input; libtorch runs a parameter's gradient accumulation as soon as its producer finishes (accumulation
/// nodes have the highest priority in its ready queue), so by then the gradients of all parameters after this point
/// are final: the layer-boundary stand-in for the per-parameter hooks TorchSharp lacks. The trainer's distributed
/// tests check the consequence: gradients all-reduced from here equal the ones all-reduced after backward.
/// </summary>
public sealed class Boundary : torch.autograd.SingleTensorFunction<Boundary>
{
    public override string Name => nameof(Boundary);

    /// <summary>x marked: <paramref name="reached"/> runs in backward once x's gradient is complete. x's view, with
    /// TorchSharp's placeholder for it slimmed (Kernels.AutogradOutputs): else each mark would hold a second [B, T, d].</summary>
    public static Tensor Mark(Tensor x, Action reached) => AutogradOutputs.Apply(slot => apply(x, reached, slot));

    public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars)
    {
        AutogradOutputs.Fill(ctx, vars);
        ctx.save_data("reached", vars[1]);
        return ((Tensor)vars[0]).view_as((Tensor)vars[0]);
    }

    public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor grad_output) => BackwardTensors.Run(grad_output, () =>
    {
        ((Action)ctx.get_data("reached"))();
        return [grad_output, null!, null!]; // one per input of apply: the action and the slot have none
    });
}
