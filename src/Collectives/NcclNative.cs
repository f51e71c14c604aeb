// libnccl.so.2, the two libtorch entry points NCCL needs (a tensor's data pointer, the current CUDA stream), and the
// CUDA runtime calls of the side stream that overlaps async all-reduces with compute.
using System.Reflection;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Collectives;

static class NcclNative
{
    const string Nccl = "nccl";
    const string Cudart = "cudart";

    // ncclDataType_t and ncclRedOp_t of nccl.h
    const int Int32 = 2, Int64 = 4, Float16 = 6, Float32 = 7, Float64 = 8, BFloat16 = 9, UInt8 = 1, Int8 = 0;
    const int Sum = 0, Max = 2, Min = 3, Avg = 4;

    static string? libraryPath;
    static IntPtr cudartHandle;
    static readonly object Gate = new();

    // One resolver for the assembly, whichever native library is asked for first.
    static NcclNative() => NativeLibrary.SetDllImportResolver(typeof(NcclNative).Assembly, Resolve);

    /// <summary>Finds libnccl.so.2 and checks that CUDA is usable; throws one message that names what is missing and
    /// where it was looked for.</summary>
    public static void EnsureAvailable()
    {
        var missing = new List<string>();
        lock (Gate)
        {
            if (libraryPath is null)
            {
                var (path, searched) = FindLibrary();
                if (path is null) missing.Add($"libnccl.so.2 was not found (looked in: {string.Join("; ", searched)}); install NCCL or set NCCL_LIBRARY=/path/to/libnccl.so.2");
                else libraryPath = path;
            }
        }
        if (!cuda.is_available())
            missing.Add("CUDA is not available to TorchSharp (torch.cuda.is_available() = false: no GPU, or libtorch without CUDA)");
        if (missing.Count > 0) throw new BackendUnavailableException("the NCCL backend cannot start: " + string.Join("; and ", missing));
    }

    /// <summary>NCCL_LIBRARY, then the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache), then the NCCL that
    /// PyTorch's wheels install under site-packages/nvidia/nccl/lib.</summary>
    static (string? Path, List<string> Searched) FindLibrary() =>
        Oec.Native.NativeLibrarySearch.Find("NCCL_LIBRARY", ["libnccl.so.2"], ["nvidia/nccl/lib/libnccl.so.2"]);

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) => name switch
    {
        Nccl when libraryPath is not null => NativeLibrary.Load(libraryPath),
        Cudart => cudartHandle, // EnsureCudart runs before the first cudart call
        // libtorch_cuda.so as libtorch loaded it (from OEC_LIBTORCH by its path, not on the loader's search path)
        "torch_cuda" when Mapped("libtorch_cuda.so") is string torchCuda && NativeLibrary.TryLoad(torchCuda, out var handle) => handle,
        _ => IntPtr.Zero,
    };

    /// <summary>Loads the CUDA runtime that libtorch_cuda already uses (one runtime, one view of devices and
    /// streams): the libcudart mapped into this process, else libcudart.so(.13, .12) through the loader; else throws one
    /// message naming both places.</summary>
    public static void EnsureCudart()
    {
        lock (Gate)
        {
            if (cudartHandle != IntPtr.Zero) return;
            string? mapped = Mapped("libcudart.so") ?? Mapped("libcudart-");
            if (mapped is not null && NativeLibrary.TryLoad(mapped, out cudartHandle)) return;
            foreach (string name in new[] { "libcudart.so", "libcudart.so.13", "libcudart.so.12" }) // wheels ship only the versioned name
                if (NativeLibrary.TryLoad(name, out cudartHandle)) return;
            throw new CollectiveException("the CUDA runtime was not found: looked for a libcudart.so* or libcudart-* mapped in /proc/self/maps ("
                + (mapped is null ? "none" : $"{mapped}, which did not load") + ") and for libcudart.so, .so.13 and .so.12 through the dynamic loader "
                + $"(LD_LIBRARY_PATH={Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "(unset)"}, /etc/ld.so.cache)");
        }
    }

    // A line of /proc/self/maps: "address perms offset dev inode   /path/to/file"; the path starts at the first '/'.
    static string? Mapped(string prefix)
    {
        if (!File.Exists("/proc/self/maps")) return null;
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            int slash = line.IndexOf('/');
            if (slash < 0) continue;
            string path = line[slash..];
            string name = Path.GetFileName(path);
            if (name.StartsWith(prefix, StringComparison.Ordinal)) return path;
        }
        return null;
    }

    /// <summary>Throws a CollectiveException with the CUDA runtime's words for a failed call.</summary>
    public static void Cuda(int error, string call)
    {
        if (error != 0)
            throw new CollectiveException($"CUDA {call} failed: {Marshal.PtrToStringAnsi(cudaGetErrorString(error)) ?? "?"} (cudaError {error})");
    }

    /// <summary>Makes <paramref name="device"/> current on this thread (the runtime's current device is per thread;
    /// streams and events belong to the device current at their creation, and stream 0 names that device's stream).
    /// It stays current: a rank drives one GPU, libtorch's ops choose their device by their tensors, and switching back
    /// to a thread's default device 0 would create a CUDA context there (about 500 MB of GPU 0) in every other rank of a node.</summary>
    public static void UseDevice(int device)
    {
        Cuda(cudaGetDevice(out int current), "cudaGetDevice");
        if (current != device) Cuda(cudaSetDevice(device), $"cudaSetDevice({device})");
    }

    public static int DataType(ScalarType type) => type switch
    {
        ScalarType.Float32 => Float32,
        ScalarType.Float64 => Float64,
        ScalarType.Float16 => Float16,
        ScalarType.BFloat16 => BFloat16,
        ScalarType.Int64 => Int64,
        ScalarType.Int32 => Int32,
        ScalarType.Int8 => Int8,
        ScalarType.Byte => UInt8,
        _ => throw new ArgumentException($"NCCL has no data type for {type}"),
    };

    public static int Op(ReduceOp op) => op switch
    {
        ReduceOp.Sum => Sum,
        ReduceOp.Average => Avg,
        ReduceOp.Max => Max,
        ReduceOp.Min => Min,
        _ => throw new ArgumentOutOfRangeException(nameof(op), op, "not a reduction"),
    };

    public static byte[] NewUniqueId()
    {
        var id = new UniqueId();
        int result = ncclGetUniqueId(ref id);
        if (result != 0) throw new CollectiveException($"ncclGetUniqueId failed: {Describe(result, IntPtr.Zero)}");
        return id.ToArray();
    }

    public static IntPtr InitRank(int worldSize, byte[] uniqueId, int rank)
    {
        int result = ncclCommInitRank(out var comm, worldSize, UniqueId.From(uniqueId), rank);
        if (result != 0) throw InitFailure(result, $"ncclCommInitRank (rank {rank} of {worldSize}) failed: {Describe(result, IntPtr.Zero)}");
        return comm;
    }

    /// <summary>A failed communicator setup: what no restart changes (ncclUnhandledCudaError 1: the GPU cannot be used,
    /// e.g. taken by another process in exclusive mode; ncclInvalidArgument 4 and ncclInvalidUsage 5: e.g. two ranks on
    /// one GPU) is a <see cref="BackendUnavailableException"/>, a configuration failure; the rest (a system or internal
    /// error, a remote peer's) a <see cref="CollectiveException"/>, a lost peer, which a new generation may not meet.</summary>
    public static Exception InitFailure(int result, string message) =>
        result is 1 or 4 or 5 ? new BackendUnavailableException(message) : new CollectiveException(message);

    public static IntPtr CurrentStream(int device)
    {
        return Oec.Native.LibTorchNative.CurrentStream(device, out int error)
            ?? throw new CollectiveException($"libtorch could not report the current CUDA stream of cuda:{device} (code {error})");
    }

    public static int AsyncError(IntPtr comm) => ncclCommGetAsyncError(comm, out int error) == 0 ? error : 3;

    public static string Describe(int result, IntPtr comm)
    {
        string text = Marshal.PtrToStringAnsi(ncclGetErrorString(result)) ?? $"error {result}";
        string? last = comm == IntPtr.Zero ? null : Marshal.PtrToStringAnsi(ncclGetLastError(comm));
        return string.IsNullOrEmpty(last) ? $"{text} (ncclResult {result})" : $"{text} (ncclResult {result}): {last}";
    }

    /// <summary>ncclUniqueId: 128 opaque bytes, passed BY VALUE to ncclCommInitRank (a pointer gives ncclInvalidArgument).</summary>
    [StructLayout(LayoutKind.Sequential, Size = 128)]
    unsafe struct UniqueId
    {
        fixed byte bytes[128];

        public byte[] ToArray()
        {
            var copy = new byte[128];
            fixed (byte* p = bytes) new ReadOnlySpan<byte>(p, 128).CopyTo(copy);
            return copy;
        }

        public static UniqueId From(byte[] source)
        {
            if (source.Length != 128) throw new CollectiveException($"NCCL unique id from the rendezvous has {source.Length} bytes, expected 128");
            var id = new UniqueId();
            source.CopyTo(new Span<byte>(id.bytes, 128));
            return id;
        }
    }

    [DllImport(Nccl)] static extern int ncclGetUniqueId(ref UniqueId id);
    [DllImport(Nccl)] static extern int ncclCommInitRank(out IntPtr comm, int nranks, UniqueId id, int rank);
    [DllImport(Nccl)] public static extern int ncclAllReduce(IntPtr send, IntPtr receive, ulong count, int type, int op, IntPtr comm, IntPtr stream);
    [DllImport(Nccl)] public static extern int ncclBroadcast(IntPtr send, IntPtr receive, ulong count, int type, int root, IntPtr comm, IntPtr stream);
    [DllImport(Nccl)] public static extern int ncclAllGather(IntPtr send, IntPtr receive, ulong sendCount, int type, IntPtr comm, IntPtr stream);
    [DllImport(Nccl)] public static extern int ncclReduceScatter(IntPtr send, IntPtr receive, ulong receiveCount, int type, int op, IntPtr comm, IntPtr stream);
    [DllImport(Nccl)] public static extern int ncclCommSplit(IntPtr comm, int color, int key, out IntPtr child, IntPtr config);
    [DllImport(Nccl)] public static extern int ncclCommCount(IntPtr comm, out int count);
    [DllImport(Nccl)] public static extern int ncclCommUserRank(IntPtr comm, out int rank);
    [DllImport(Nccl)] public static extern int ncclCommGetAsyncError(IntPtr comm, out int error);
    [DllImport(Nccl)] public static extern int ncclCommAbort(IntPtr comm);
    [DllImport(Nccl)] public static extern int ncclCommDestroy(IntPtr comm);
    [DllImport(Nccl)] static extern IntPtr ncclGetErrorString(int result);
    [DllImport(Nccl)] static extern IntPtr ncclGetLastError(IntPtr comm);

    // cuda_runtime_api.h: cudaError_t results (0 = cudaSuccess); flags cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2.
    public const uint StreamNonBlocking = 1, EventDisableTiming = 2;
    [DllImport(Cudart)] public static extern int cudaStreamCreateWithFlags(out IntPtr stream, uint flags);
    [DllImport(Cudart)] public static extern int cudaStreamDestroy(IntPtr stream);
    [DllImport(Cudart)] public static extern int cudaEventCreateWithFlags(out IntPtr cudaEvent, uint flags);
    [DllImport(Cudart)] public static extern int cudaEventDestroy(IntPtr cudaEvent);
    [DllImport(Cudart)] public static extern int cudaEventRecord(IntPtr cudaEvent, IntPtr stream);
    [DllImport(Cudart)] public static extern int cudaStreamWaitEvent(IntPtr stream, IntPtr cudaEvent, uint flags);
    [DllImport(Cudart)] public static extern int cudaEventSynchronize(IntPtr cudaEvent);
    [DllImport(Cudart)] public static extern int cudaEventElapsedTime(out float ms, IntPtr start, IntPtr end);
    /// <summary>Free and total bytes of a GPU (cudaMemGetInfo): what the processes on it hold, contexts and caches included.</summary>
    public static (long Free, long Total) MemoryInfo(int device)
    {
        EnsureCudart();
        UseDevice(device);
        Cuda(cudaMemGetInfo(out var free, out var total), "cudaMemGetInfo");
        return ((long)free, (long)total);
    }

    [DllImport(Cudart)] static extern int cudaMemGetInfo(out nuint free, out nuint total);
    [DllImport(Cudart)] static extern int cudaGetDevice(out int device);
    [DllImport(Cudart)] static extern int cudaSetDevice(int device);
    [DllImport(Cudart)] static extern IntPtr cudaGetErrorString(int error);
}
