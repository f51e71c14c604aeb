// The public contract of the collectives library: reduction kinds, the communicator interface and its exception.
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

/// <summary>Element-wise reduction. Average = Sum then divide by the group size; on integer dtypes that division is
/// floor division (like torch.div(rounding_mode="floor")), so -3 averaged over 2 ranks gives -2.</summary>
public enum ReduceOp { Sum, Average, Max, Min }

/// <summary>A collective failed. The message names the failed peer (rank and endpoint) where known.
/// After it is thrown the communicator is broken: every later operation throws again.</summary>
public sealed class CollectiveException : Exception
{
    public CollectiveException(string message) : base(message) { }
    public CollectiveException(string message, Exception? inner) : base(message, inner) { }
}

/// <summary>A group of ranks that run collectives together. Every member must call the same operations in the same
/// order with tensors of the same dtype and size. Tensors: contiguous, on the CPU, modified in place.</summary>
public interface ICommunicator : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>In place, any shape.</summary>
    void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>In place: every rank ends with root's values.</summary>
    void Broadcast(Tensor tensor, int root);

    /// <summary>output = concatenation over ranks along dim 0 (output.numel = world * input.numel).</summary>
    void AllGather(Tensor input, Tensor output);

    /// <summary>input.numel = world * output.numel; rank r gets the reduced r-th slice.</summary>
    void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum);

    void Barrier();

    /// <summary>Collective over this group: ranks with equal color form a group, ordered by (key, parent rank).</summary>
    ICommunicator Split(int color, int key);
}
