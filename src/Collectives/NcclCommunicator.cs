// The GPU backend: NCCL (libnccl.so.2 through P/Invoke) on CUDA tensors, on the current CUDA stream; async
// all-reduces on a side stream.
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
/// AllReduceAsync runs on a second, non-blocking stream so it overlaps the kernels queued after it on the current
/// stream (the backward pass); events order it after the work queued before it, and Wait makes the current stream
/// wait for it alone, not for async operations queued after it (on the GPU: the host does not block). Synchronous operations also wait for queued async ones, so all
/// NCCL kernels of a communicator run in call order (NCCL does not promise progress for two at once).
/// </summary>
public sealed class NcclCommunicator : ICommunicator
{
    /// <summary>The bytes of GPU <paramref name="device"/> in use (total - free, cudaMemGetInfo): every process's
    /// allocations, CUDA contexts and allocator caches; what the GPU benchmark reports for either framework.</summary>
    public static long DeviceMemoryUsed(int device)
    {
        var (free, total) = NcclNative.MemoryInfo(device);
        return total - free;
    }

    IntPtr comm;
    readonly int device;
    readonly TimeSpan timeout;
    IntPtr sideStream, inputReady, sideDone; // created by the first async operation (CUDA runtime handles); sideDone: after the newest
    bool sidePending;                        // an async operation was queued after the current stream last waited for sideDone

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
        NcclNative.EnsureCudart();
        NcclNative.UseDevice(device); // NCCL binds a communicator to the device current at init
        return new NcclCommunicator(NcclNative.InitRank(worldSize, Convert.FromBase64String(ids[0]), rank), rank, worldSize, device, timeout);
    }

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        var (data, count, type) = Buffer(tensor, nameof(tensor));
        Check(NcclNative.ncclAllReduce(data, data, count, type, NcclNative.Op(op), comm, Stream()), "all-reduce");
    }

    /// <summary>Event inputReady on the current stream, the side stream waits for it, ncclAllReduce on the side
    /// stream, then an event of its own after it (what Wait waits for) and sideDone (what synchronous operations wait for).</summary>
    public IPendingCollective AllReduceAsync(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        var (data, count, type) = Buffer(tensor, nameof(tensor));
        return OnSideStream(stream => NcclNative.ncclAllReduce(data, data, count, type, NcclNative.Op(op), comm, stream), "all-reduce (async)");
    }

    /// <summary>As <see cref="AllReduceAsync"/>, ncclAllGather on the side stream.</summary>
    public IPendingCollective AllGatherAsync(Tensor input, Tensor output)
    {
        var (send, count, type) = Buffer(input, nameof(input));
        var (receive, outCount, _) = Buffer(output, nameof(output));
        if (outCount != count * (ulong)WorldSize)
            throw new ArgumentException($"all-gather: output has {outCount} elements, expected world size {WorldSize} x {count}");
        return OnSideStream(stream => NcclNative.ncclAllGather(send, receive, count, type, comm, stream), "all-gather (async)");
    }

    /// <summary>As <see cref="AllReduceAsync"/>, ncclReduceScatter on the side stream.</summary>
    public IPendingCollective ReduceScatterAsync(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        var (send, count, type) = Buffer(input, nameof(input));
        var (receive, outCount, _) = Buffer(output, nameof(output));
        if (count != outCount * (ulong)WorldSize)
            throw new ArgumentException($"reduce-scatter: input has {count} elements, expected world size {WorldSize} x {outCount}");
        return OnSideStream(stream => NcclNative.ncclReduceScatter(send, receive, outCount, type, NcclNative.Op(op), comm, stream), "reduce-scatter (async)");
    }

    IPendingCollective OnSideStream(Func<IntPtr, int> launch, string operation)
    {
        NcclNative.EnsureCudart(); // before the first cudart call (UseDevice): the resolver hands out this handle
        NcclNative.UseDevice(device);
        CreateSideStream();
        NcclNative.Cuda(NcclNative.cudaEventRecord(inputReady, NcclNative.CurrentStream(device)), "cudaEventRecord (input ready)");
        NcclNative.Cuda(NcclNative.cudaStreamWaitEvent(sideStream, inputReady, 0), "cudaStreamWaitEvent (side stream)");
        Check(launch(sideStream), operation);
        NcclNative.Cuda(NcclNative.cudaEventCreateWithFlags(out var done, NcclNative.EventDisableTiming), "cudaEventCreateWithFlags");
        NcclNative.Cuda(NcclNative.cudaEventRecord(done, sideStream), $"cudaEventRecord ({operation} done)");
        NcclNative.Cuda(NcclNative.cudaEventRecord(sideDone, sideStream), $"cudaEventRecord ({operation} done)");
        sidePending = true;
        return new Pending(this, done);
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
        JoinSideStream();
        Check(NcclNative.ncclCommSplit(comm, color, key, out var child, IntPtr.Zero), "split");
        Check(NcclNative.ncclCommCount(child, out int size), "split (count)");
        Check(NcclNative.ncclCommUserRank(child, out int rank), "split (rank)");
        return new NcclCommunicator(child, rank, size, device, timeout);
    }

    /// <summary>Destroying a stream or event with work still queued is allowed: CUDA frees them once it is done.</summary>
    public void Dispose()
    {
        if (comm != IntPtr.Zero) NcclNative.ncclCommDestroy(comm);
        comm = IntPtr.Zero;
        if (inputReady != IntPtr.Zero) NcclNative.cudaEventDestroy(inputReady);
        if (sideDone != IntPtr.Zero) NcclNative.cudaEventDestroy(sideDone);
        if (sideStream != IntPtr.Zero) NcclNative.cudaStreamDestroy(sideStream);
        (inputReady, sideDone, sideStream) = (IntPtr.Zero, IntPtr.Zero, IntPtr.Zero);
    }

    (IntPtr Data, ulong Count, int Type) Buffer(Tensor tensor, string name)
    {
        if (comm == IntPtr.Zero) throw new ObjectDisposedException(nameof(NcclCommunicator));
        if (tensor.device_type != DeviceType.CUDA || tensor.device_index != device)
            throw new ArgumentException($"{name}: NCCL needs a tensor on cuda:{device}, got {tensor.device}");
        if (!tensor.is_contiguous()) throw new ArgumentException($"{name}: NCCL needs a contiguous tensor");
        return (TensorMemory.Data(tensor), (ulong)tensor.numel(), NcclNative.DataType(tensor.dtype));
    }

    // The current stream, made to wait for queued async all-reduces first (the order all ranks call operations in).
    IntPtr Stream()
    {
        JoinSideStream();
        return NcclNative.CurrentStream(device);
    }

    void JoinSideStream()
    {
        if (sideDone == IntPtr.Zero || !sidePending) return;
        NcclNative.UseDevice(device);
        NcclNative.Cuda(NcclNative.cudaStreamWaitEvent(NcclNative.CurrentStream(device), sideDone, 0), "cudaStreamWaitEvent (current stream)");
        sidePending = false;
    }

    // Non-blocking: no implicit synchronisation with the legacy default stream, which may be the current one.
    void CreateSideStream()
    {
        if (sideStream != IntPtr.Zero) return;
        NcclNative.Cuda(NcclNative.cudaEventCreateWithFlags(out inputReady, NcclNative.EventDisableTiming), "cudaEventCreateWithFlags");
        NcclNative.Cuda(NcclNative.cudaEventCreateWithFlags(out sideDone, NcclNative.EventDisableTiming), "cudaEventCreateWithFlags");
        NcclNative.Cuda(NcclNative.cudaStreamCreateWithFlags(out sideStream, NcclNative.StreamNonBlocking), "cudaStreamCreateWithFlags");
    }

    // Wait: the current stream waits for this operation's event (the host does not block; a later async operation
    // still overlaps), then NCCL's asynchronous error, if any. The event is destroyed once waited for (CUDA frees it
    // when it has fired); a second Wait does nothing.
    sealed class Pending(NcclCommunicator c, IntPtr done) : IPendingCollective
    {
        public void Wait()
        {
            if (c.comm == IntPtr.Zero)
                throw new CollectiveException($"NCCL collective (async) on rank {c.Rank} of {c.WorldSize} (cuda:{c.device}): the communicator was aborted or disposed before Wait");
            if (done != IntPtr.Zero)
            {
                NcclNative.UseDevice(c.device);
                // the current stream then, which may differ from the one a synchronous op joined
                NcclNative.Cuda(NcclNative.cudaStreamWaitEvent(NcclNative.CurrentStream(c.device), done, 0), "cudaStreamWaitEvent (current stream)");
                NcclNative.cudaEventDestroy(done);
                done = IntPtr.Zero;
            }
            c.Check(0, "collective (async)");
        }
    }

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
