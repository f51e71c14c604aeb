// The GPU backend: NCCL (libnccl.so.2 through P/Invoke) on CUDA tensors, on the current CUDA stream.
using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

/// <summary>
/// A communicator over NCCL. The unique id of a group travels from rank 0 through the rendezvous (base64 of its 128
/// bytes); NCCL then connects the ranks itself. Collectives are enqueued on the current CUDA stream of the tensor's
/// device, so they are ordered with the kernels that produced and consume the tensor; NCCL errors become
/// <see cref="CollectiveException"/> carrying NCCL's error string. Verified facts (platform notes): the unique id is
/// passed by value; NCCL refuses two ranks on one GPU, so a single-GPU machine runs world size 1 only.
/// </summary>
public sealed class NcclCommunicator : ICommunicator
{
    IntPtr comm;
    readonly int device;
    readonly TimeSpan timeout;

    public int Rank { get; }
    public int WorldSize { get; }

    NcclCommunicator(IntPtr comm, int rank, int worldSize, int device, TimeSpan timeout)
    {
        this.comm = comm;
        Rank = rank;
        WorldSize = worldSize;
        this.device = device;
        this.timeout = timeout;
    }

    /// <summary>Rank 0 makes the unique id, every rank receives it through the rendezvous, then all init together.
    /// <paramref name="device"/> is the CUDA device of this rank (its LOCAL_RANK).</summary>
    public static NcclCommunicator Create(IRendezvous rendezvous, string groupKey, int rank, int worldSize, int device, TimeSpan timeout)
    {
        NcclNative.EnsureAvailable();
        string id = rank == 0 ? Convert.ToBase64String(NcclNative.NewUniqueId()) : "";
        var ids = rendezvous.AllGather(groupKey + "/nccl-unique-id", rank, worldSize, id, timeout);
        torch.cuda.synchronize(new Device(DeviceType.CUDA, device));
        return new NcclCommunicator(NcclNative.InitRank(worldSize, Convert.FromBase64String(ids[0]), rank), rank, worldSize, device, timeout);
    }

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        var (data, count, type) = Buffer(tensor, nameof(tensor));
        Check(NcclNative.ncclAllReduce(data, data, count, type, NcclNative.Op(op), comm, Stream()), "all-reduce");
    }

    public void Broadcast(Tensor tensor, int root)
    {
        if (root < 0 || root >= WorldSize) throw new ArgumentOutOfRangeException(nameof(root), root, $"root must be a rank in [0, {WorldSize})");
        var (data, count, type) = Buffer(tensor, nameof(tensor));
        Check(NcclNative.ncclBroadcast(data, data, count, type, root, comm, Stream()), "broadcast");
    }

    public void AllGather(Tensor input, Tensor output)
    {
        var (send, count, type) = Buffer(input, nameof(input));
        var (receive, outCount, _) = Buffer(output, nameof(output));
        if (outCount != count * (ulong)WorldSize)
            throw new ArgumentException($"all-gather: output has {outCount} elements, expected world size {WorldSize} x {count}");
        Check(NcclNative.ncclAllGather(send, receive, count, type, comm, Stream()), "all-gather");
    }

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        var (send, count, type) = Buffer(input, nameof(input));
        var (receive, outCount, _) = Buffer(output, nameof(output));
        if (count != outCount * (ulong)WorldSize)
            throw new ArgumentException($"reduce-scatter: input has {count} elements, expected world size {WorldSize} x {outCount}");
        Check(NcclNative.ncclReduceScatter(send, receive, outCount, type, NcclNative.Op(op), comm, Stream()), "reduce-scatter");
    }

    /// <summary>An all-reduce of one element, then a wait for the stream: returns when every rank has arrived.</summary>
    public void Barrier()
    {
        using var token = zeros(1, device: new Device(DeviceType.CUDA, device));
        AllReduce(token);
        torch.cuda.synchronize(new Device(DeviceType.CUDA, device));
    }

    /// <summary>ncclCommSplit (NCCL 2.18+): ranks with equal color form a communicator, ordered by key.</summary>
    public ICommunicator Split(int color, int key)
    {
        Check(NcclNative.ncclCommSplit(comm, color, key, out var child, IntPtr.Zero), "split");
        Check(NcclNative.ncclCommCount(child, out int size), "split (count)");
        Check(NcclNative.ncclCommUserRank(child, out int rank), "split (rank)");
        return new NcclCommunicator(child, rank, size, device, timeout);
    }

    public void Dispose()
    {
        if (comm == IntPtr.Zero) return;
        NcclNative.ncclCommDestroy(comm);
        comm = IntPtr.Zero;
    }

    (IntPtr Data, ulong Count, int Type) Buffer(Tensor tensor, string name)
    {
        if (comm == IntPtr.Zero) throw new ObjectDisposedException(nameof(NcclCommunicator));
        if (tensor.device_type != DeviceType.CUDA || tensor.device_index != device)
            throw new ArgumentException($"{name}: NCCL needs a tensor on cuda:{device}, got {tensor.device}");
        if (!tensor.is_contiguous()) throw new ArgumentException($"{name}: NCCL needs a contiguous tensor");
        return (TensorMemory.Data(tensor), (ulong)tensor.numel(), NcclNative.DataType(tensor.dtype));
    }

    IntPtr Stream() => NcclNative.CurrentStream(device);

    /// <summary>An NCCL failure aborts the communicator (no later call can hang on it) and throws NCCL's own words.</summary>
    void Check(int result, string operation)
    {
        if (result == 0 && NcclNative.ncclCommGetAsyncError(comm, out int asyncError) == 0 && asyncError is 0 or 7) return;
        string detail = NcclNative.Describe(result != 0 ? result : NcclNative.AsyncError(comm), comm);
        NcclNative.ncclCommAbort(comm);
        comm = IntPtr.Zero;
        throw new CollectiveException($"NCCL {operation} failed on rank {Rank} of {WorldSize} (cuda:{device}): {detail}");
    }
}
