// The optimizer as the step and the checkpoints use it, wherever its state lives.
namespace Rank.Training;

/// <summary>AdamW: <see cref="FlatAdamW"/> (every rank holds all of its state) or Rank.Parallel.ZeroAdamW (the state
/// split over the data group).</summary>
public interface IOptimizer : IDisposable
{
    /// <summary>Steps taken (AdamW's t).</summary>
    long Steps { get; }

    /// <summary>One step at learning rate <paramref name="lr"/>; afterwards the parameters are this step's wherever they are held.</summary>
    void Step(double lr);

    void ZeroGrad();

    /// <summary>Bytes this rank holds now in the fp32 master weights, the gradients and AdamW's moments (measured from
    /// the tensors allocated; between steps, a stage 3 block's gathered weights and a stage 2 whole gradient are freed).</summary>
    HeldBytes Held { get; }
}

/// <summary>Bytes of the optimizer's three kinds of state on one rank.</summary>
public sealed record HeldBytes(long Weights, long Gradients, long Moments)
{
    /// <summary>The bytes of a tensor's elements; 0 for none.</summary>
    public static long Of(TorchSharp.torch.Tensor? t) => t is null ? 0 : t.numel() * t.ElementSize;
}
