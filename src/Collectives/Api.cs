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

/// <summary>A backend that cannot start on this machine (its library or device missing): no peer was lost, and no
/// restart on the same machine can help.</summary>
public sealed class BackendUnavailableException(string message) : Exception(message);

/// <summary>A collective started by <see cref="ICommunicator.AllReduceAsync"/>. Until <see cref="Wait"/> returns, the
/// caller keeps the tensor alive and neither reads nor writes it.</summary>
public interface IPendingCollective
{
    /// <summary>Completes the operation: afterwards the tensor holds the result (on a GPU: for work queued after this
    /// call on the current stream). Throws the operation's <see cref="CollectiveException"/>, also when it made no
    /// progress (moved no data) within the communicator's timeout, as a synchronous call would. Calling it again returns
    /// (or throws) the same way.</summary>
    void Wait();
}

/// <summary>A group of ranks that run collectives together. Every member must call the same operations in the same
/// order with tensors of the same dtype and size; an AllReduceAsync counts in that order where it is called, not
/// where it is waited for. Calls must not race each other (one thread at a time, e.g. the autograd thread while the
/// owner is inside backward). Tensors: contiguous, modified in place; for the TCP ring on the CPU or a
/// GPU (copied to pinned host memory and back, synchronously), for NCCL on the communicator's GPU.</summary>
public interface ICommunicator : IDisposable
{
    int Rank { get; }
    int WorldSize { get; }

    /// <summary>In place, any shape.</summary>
    void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum);

    /// <summary>Starts an in-place all-reduce and returns at once; later operations of this communicator run after
    /// it. This default runs it synchronously (for wrappers and fakes); the TCP ring and NCCL overlap it.</summary>
    IPendingCollective AllReduceAsync(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        AllReduce(tensor, op);
        return PendingCollective.Done;
    }

    /// <summary>In place: every rank ends with root's values.</summary>
    void Broadcast(Tensor tensor, int root);

    /// <summary>output = concatenation over ranks along dim 0 (output.numel = world * input.numel).</summary>
    void AllGather(Tensor input, Tensor output);

    /// <summary>Starts <see cref="AllGather"/> and returns at once (the input is read before it returns; the output
    /// holds the result after Wait), ordered among this communicator's operations where it is called. This default
    /// runs it synchronously; the TCP ring and NCCL overlap it.</summary>
    IPendingCollective AllGatherAsync(Tensor input, Tensor output)
    {
        AllGather(input, output);
        return PendingCollective.Done;
    }

    /// <summary>input.numel = world * output.numel; rank r gets the reduced r-th slice.</summary>
    void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum);

    /// <summary>Starts <see cref="ReduceScatter"/> and returns at once, ordered among this communicator's operations
    /// where it is called; the input is read until Wait returns (keep it alive and unchanged), the output holds the
    /// result after it. This default runs it synchronously; the TCP ring and NCCL overlap it.</summary>
    IPendingCollective ReduceScatterAsync(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        ReduceScatter(input, output, op);
        return PendingCollective.Done;
    }

    void Barrier();

    /// <summary>Collective over this group: ranks with equal color form a group, ordered by (key, parent rank).</summary>
    ICommunicator Split(int color, int key);
}

internal sealed class PendingCollective : IPendingCollective
{
    public static readonly IPendingCollective Done = new PendingCollective();
    public void Wait() { }
}
