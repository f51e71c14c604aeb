// The three native libraries the kernel runtime calls: NVRTC (compiles CUDA C to a cubin), the CUDA driver API (loads
// and launches it, in the primary context that libtorch's runtime uses) and libtorch_cuda (its current stream, asked
// through Oec.Native.LibTorchNative). Found once; a missing one is reported in one sentence that names where it was
// looked for.
using System.Reflection;
using System.Runtime.InteropServices;

namespace Kernels.Cuda;

static class Native
{
    const string Nvrtc = "nvrtc", Driver = "cuda", TorchCuda = "torch_cuda";

    static string? nvrtcPath;
    static readonly object Gate = new();

    static Native() => NativeLibrary.SetDllImportResolver(typeof(Native).Assembly, Resolve);

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path) => name switch
    {
        Nvrtc when nvrtcPath is not null => NativeLibrary.Load(nvrtcPath),
        Driver => NativeLibrary.TryLoad("libcuda.so.1", out var handle) ? handle : IntPtr.Zero,
        // The libtorch_cuda.so libtorch loaded, wherever from: the loader matches an already loaded object by its soname.
        TorchCuda => NativeLibrary.TryLoad("libtorch_cuda.so", out var handle) ? handle : IntPtr.Zero,
        _ => IntPtr.Zero,
    };

    /// <summary>Finds libnvrtc and libcuda.so.1; null when both load, else why not (naming every place looked in).</summary>
    public static string? Unavailable()
    {
        var missing = new List<string>();
        if (NvrtcUnavailable() is { } nvrtc) missing.Add(nvrtc);
        if (!NativeLibrary.TryLoad("libcuda.so.1", out _))
            missing.Add("the CUDA driver (libcuda.so.1) did not load: no NVIDIA driver on this machine");
        return missing.Count == 0 ? null : string.Join("; and ", missing);
    }

    /// <summary>Finds libnvrtc; null when found, else why not (naming every place looked in).</summary>
    public static string? NvrtcUnavailable()
    {
        lock (Gate)
        {
            if (nvrtcPath is not null) return null;
            var (found, searched) = FindNvrtc();
            if (found is null)
                return $"NVRTC was not found (looked in: {string.Join("; ", searched)}); install PyTorch's nvidia wheels or the CUDA toolkit, or set {NvrtcVariable}=/path/to/libnvrtc.so.13";
            PreloadBuiltins(found);
            nvrtcPath = found;
            return null;
        }
    }

    /// <summary>NVRTC opens libnvrtc-builtins by its soname through the dynamic loader's paths, not from beside itself:
    /// libnvrtc found by its full path (PyTorch's wheels, OEC_NVRTC_LIBRARY) would fail every compile with "failed to
    /// open libnvrtc-builtins.so". Loaded here by path first, the loader then finds it by its soname among the loaded.</summary>
    static void PreloadBuiltins(string nvrtc)
    {
        string? dir = Path.GetDirectoryName(Path.GetFullPath(nvrtc));
        if (dir is null || !Directory.Exists(dir)) return;
        foreach (string builtins in Directory.GetFiles(dir, "libnvrtc-builtins.so*").OrderByDescending(f => f.Length)) // the most specific name first
            if (NativeLibrary.TryLoad(builtins, out _)) return;
    }

    /// <summary>The environment variable that names libnvrtc explicitly.</summary>
    public const string NvrtcVariable = "OEC_NVRTC_LIBRARY";

    /// <summary>OEC_NVRTC_LIBRARY, then the dynamic loader, then the CUDA toolkit's place and PyTorch's wheels
    /// (nvidia/cu13/lib, nvidia/cuda_nvrtc/lib). 11.2 is the soname of CUDA 11.2 to 11.8's NVRTC (Debian 12's
    /// libnvrtc11.2 is 11.8's, which knows sm_90).</summary>
    static (string? Path, List<string> Searched) FindNvrtc() => Oec.Native.NativeLibrarySearch.Find(NvrtcVariable,
        ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", "libnvrtc.so.11.2"],
        ["/usr/local/cuda/lib64/libnvrtc.so", "nvidia/cu13/lib/libnvrtc.so.13", "nvidia/cuda_nvrtc/lib/libnvrtc.so.12"]);

    // nvrtc.h: nvrtcResult (0 = NVRTC_SUCCESS).
    [DllImport(Nvrtc)] public static extern int nvrtcVersion(out int major, out int minor);
    [DllImport(Nvrtc)] public static extern int nvrtcGetNumSupportedArchs(out int count);
    [DllImport(Nvrtc)] public static extern int nvrtcGetSupportedArchs(int[] architectures);
    [DllImport(Nvrtc)] public static extern int nvrtcCreateProgram(out IntPtr program, [MarshalAs(UnmanagedType.LPUTF8Str)] string source,
        [MarshalAs(UnmanagedType.LPUTF8Str)] string name, int headerCount, IntPtr[] headers, IntPtr[] includeNames);
    [DllImport(Nvrtc)] public static extern int nvrtcCompileProgram(IntPtr program, int optionCount, IntPtr[] options);
    [DllImport(Nvrtc)] public static extern int nvrtcGetProgramLogSize(IntPtr program, out nuint size);
    [DllImport(Nvrtc)] public static extern int nvrtcGetProgramLog(IntPtr program, byte[] log);
    [DllImport(Nvrtc)] public static extern int nvrtcGetCUBINSize(IntPtr program, out nuint size);
    [DllImport(Nvrtc)] public static extern int nvrtcGetCUBIN(IntPtr program, byte[] cubin);
    [DllImport(Nvrtc)] public static extern int nvrtcDestroyProgram(ref IntPtr program);
    [DllImport(Nvrtc)] public static extern IntPtr nvrtcGetErrorString(int result);

    // cuda.h: CUresult (0 = CUDA_SUCCESS); CUdevice is an int, the rest are handles.
    public const int ComputeCapabilityMajor = 75, ComputeCapabilityMinor = 76;
    public const int FuncAttributeMaxDynamicSharedSize = 8;
    [DllImport(Driver)] public static extern int cuInit(uint flags);
    [DllImport(Driver)] public static extern int cuDeviceGet(out int device, int ordinal);
    [DllImport(Driver)] public static extern int cuDeviceGetAttribute(out int value, int attribute, int device);
    [DllImport(Driver)] public static extern int cuDevicePrimaryCtxRetain(out IntPtr context, int device);
    [DllImport(Driver)] public static extern int cuCtxGetCurrent(out IntPtr context);
    [DllImport(Driver)] public static extern int cuCtxSetCurrent(IntPtr context);
    [DllImport(Driver)] public static extern int cuModuleLoadData(out IntPtr module, byte[] image);
    [DllImport(Driver)] public static extern int cuModuleGetFunction(out IntPtr function, IntPtr module, [MarshalAs(UnmanagedType.LPUTF8Str)] string name);
    [DllImport(Driver)] public static extern int cuFuncSetAttribute(IntPtr function, int attribute, int value);
    [DllImport(Driver)] public static extern unsafe int cuLaunchKernel(IntPtr function, uint gridX, uint gridY, uint gridZ,
        uint blockX, uint blockY, uint blockZ, uint sharedBytes, IntPtr stream, void** parameters, void** extra);
    [DllImport(Driver)] public static extern int cuGetErrorString(int result, out IntPtr text);


    /// <summary>Throws KernelException with the driver's words for a failed call.</summary>
    public static void Check(int result, string call)
    {
        if (result == 0) return;
        string text = cuGetErrorString(result, out var p) == 0 ? Marshal.PtrToStringAnsi(p) ?? "?" : "?";
        throw new KernelException($"CUDA driver call {call} failed: {text} (CUresult {result})");
    }

    /// <summary>Throws KernelException with NVRTC's words for a failed call.</summary>
    public static void CheckNvrtc(int result, string call)
    {
        if (result != 0) throw new KernelException($"NVRTC {call} failed: {Marshal.PtrToStringAnsi(nvrtcGetErrorString(result)) ?? "?"} (nvrtcResult {result})");
    }
}
