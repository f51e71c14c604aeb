// One GPU's compiled kernels: NVRTC compiles a source of Sources/ for the device's architecture (through the disk
// cache), the driver loads it into the primary context that libtorch's CUDA runtime uses, and launches run on
// libtorch's current stream on tensors libtorch allocated, as CuPy's RawKernel does.
using System.Collections.Concurrent;
using System.Reflection;
using Kernels.Cuda;
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels;

public sealed class KernelRuntime
{
    static readonly ConcurrentDictionary<int, Lazy<(KernelRuntime? Runtime, string? Why)>> Devices = new();

    readonly IntPtr context;
    readonly Dictionary<string, IntPtr> modules = [];
    readonly Dictionary<(string, string), Kernel> functions = [];
    readonly KernelCache cache;

    public int Device { get; }
    /// <summary>The compute capability, e.g. (9, 0) on an H100 or H200.</summary>
    public (int Major, int Minor) Architecture { get; }
    /// <summary>NVRTC's version, e.g. (13, 0).</summary>
    public (int Major, int Minor) CompilerVersion { get; }

    KernelRuntime(int device, KernelCache cache)
    {
        Device = device;
        this.cache = cache;
        Native.Check(Native.cuInit(0), "cuInit");
        Native.Check(Native.cuDeviceGet(out int handle, device), $"cuDeviceGet({device})");
        Native.Check(Native.cuDeviceGetAttribute(out int major, Native.ComputeCapabilityMajor, handle), "cuDeviceGetAttribute(major)");
        Native.Check(Native.cuDeviceGetAttribute(out int minor, Native.ComputeCapabilityMinor, handle), "cuDeviceGetAttribute(minor)");
        Architecture = (major, minor);
        Native.Check(Native.cuDevicePrimaryCtxRetain(out context, handle), "cuDevicePrimaryCtxRetain");
        CompilerVersion = KernelCompiler.Version;
    }

    /// <summary>The runtime of CUDA device <paramref name="device"/>, or null with the reason (no CUDA libtorch, no
    /// driver, no NVRTC); the same answer for the life of the process.</summary>
    public static KernelRuntime? For(int device, out string? why)
    {
        var (runtime, reason) = Devices.GetOrAdd(device, d => new(() => Open(d))).Value;
        why = reason;
        return runtime;
    }

    /// <summary>The runtime of <paramref name="device"/>, or a KernelException that says why there is none.</summary>
    public static KernelRuntime Require(int device) =>
        For(device, out string? why) ?? throw new KernelException($"the fused CUDA kernels cannot run on cuda:{device}: {why}");

    static (KernelRuntime?, string?) Open(int device)
    {
        var missing = new List<string>();
        if (!cuda.is_available()) missing.Add("CUDA is not available to TorchSharp (no GPU, or a libtorch without CUDA)");
        if (Native.Unavailable() is { } libraries) missing.Add(libraries);
        if (missing.Count > 0) return (null, string.Join("; and ", missing));
        try
        {
            var runtime = new KernelRuntime(device, KernelCache.Default());
            runtime.LoadAll();
            return (runtime, null);
        }
        catch (Exception e) when (e is KernelException or DllNotFoundException or EntryPointNotFoundException) { return (null, e.Message); }
    }

    /// <summary>libtorch's current stream on this device: kernels queue behind the ops before them and ahead of those after.</summary>
    public IntPtr Stream => Oec.Native.LibTorchNative.CurrentStream(Device, out int error)
        ?? throw new KernelException($"libtorch could not report the current CUDA stream of cuda:{Device} (code {error})");

    /// <summary>The sources whose modules are loaded: every one, from the runtime's start.</summary>
    public IReadOnlyCollection<string> LoadedSources
    {
        get { lock (functions) return [.. modules.Keys]; }
    }

    /// <summary>Function <paramref name="name"/> (extern "C") of source file <paramref name="source"/> (e.g. "layernorm.cu").</summary>
    public Kernel Function(string source, string name)
    {
        lock (functions)
        {
            if (functions.TryGetValue((source, name), out var kernel)) return kernel;
            MakeCurrent();
            Native.Check(Native.cuModuleGetFunction(out var function, Module(source), name), $"cuModuleGetFunction({source}: {name})");
            return functions[(source, name)] = new Kernel(this, function, name);
        }
    }

    // Compiles (through the disk cache) and loads every source at the start, so that kernels that cannot run here (a
    // compile error, NVRTC without its builtins library, a cubin the driver refuses) refuse the runtime, and `auto`
    // falls back to the reference ops, instead of failing inside a step; and no module loads while a step runs.
    void LoadAll()
    {
        lock (functions)
        {
            MakeCurrent();
            foreach (var source in KernelSources.Names().Where(n => n.EndsWith(".cu"))) Module(source);
        }
    }

    IntPtr Module(string source)
    {
        if (modules.TryGetValue(source, out var module)) return module;
        byte[] cubin = KernelCompiler.Cached(cache, source, Architecture);
        Native.Check(Native.cuModuleLoadData(out module, cubin), $"cuModuleLoadData({source})");
        return modules[source] = module;
    }

    /// <summary>Makes the primary context current on this thread (autograd runs backward on a thread of its own; a
    /// thread that libtorch's runtime has used has it already, which costs one query).</summary>
    internal void MakeCurrent()
    {
        Native.Check(Native.cuCtxGetCurrent(out var current), "cuCtxGetCurrent");
        if (current != context) Native.Check(Native.cuCtxSetCurrent(context), "cuCtxSetCurrent");
    }
}

/// <summary>The kernel sources embedded in this assembly (Sources/*.cu and the headers they include, Sources/*.cuh).</summary>
public static class KernelSources
{
    const string Prefix = "Kernels.Sources.";

    public static IReadOnlyList<string> Names() =>
        [.. Assembly.GetExecutingAssembly().GetManifestResourceNames().Where(n => n.StartsWith(Prefix)).Select(n => n[Prefix.Length..]).Order()];

    public static string Read(string name)
    {
        using var stream = Assembly.GetExecutingAssembly().GetManifestResourceStream(Prefix + name)
            ?? throw new ArgumentException($"no kernel source {name}; the sources are {string.Join(", ", Names())}", nameof(name));
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    public static IReadOnlyList<(string Name, string Text)> Headers() => [.. Names().Where(n => n.EndsWith(".cuh")).Select(n => (n, Read(n)))];
}

/// <summary>A compiled function, launched on its runtime's device and current stream.</summary>
public sealed class Kernel(KernelRuntime runtime, IntPtr function, string name)
{
    public string Name => name;

    /// <summary>Launches a grid of <paramref name="grid"/> (x, y) blocks of <paramref name="threads"/> threads with
    /// <paramref name="sharedBytes"/> of dynamic shared memory; the arguments in the kernel's parameter order.</summary>
    public unsafe void Launch((uint X, uint Y) grid, uint threads, uint sharedBytes, params ReadOnlySpan<KernelArg> args)
    {
        if (grid.X == 0 || grid.Y == 0) return; // nothing to do (an empty tensor)
        runtime.MakeCurrent();
        long* values = stackalloc long[args.Length];
        void** pointers = stackalloc void*[args.Length];
        for (int i = 0; i < args.Length; i++)
        {
            values[i] = args[i].Bits;
            pointers[i] = values + i; // a 4-byte parameter reads the slot's low half (little-endian)
        }
        Native.Check(Native.cuLaunchKernel(function, grid.X, grid.Y, 1, threads, 1, 1, sharedBytes, runtime.Stream, pointers, null), $"cuLaunchKernel({name})");
    }

    /// <summary>Allows more than 48 KiB of dynamic shared memory per block.</summary>
    public void AllowSharedBytes(int bytes)
    {
        runtime.MakeCurrent();
        Native.Check(Native.cuFuncSetAttribute(function, Native.FuncAttributeMaxDynamicSharedSize, bytes), $"cuFuncSetAttribute({name})");
    }
}

/// <summary>One kernel argument: a tensor's device address, or an int, long or float by value.</summary>
public readonly struct KernelArg
{
    internal long Bits { get; init; }

    public static implicit operator KernelArg(Tensor t)
    {
        if (t.device_type != DeviceType.CUDA) throw new ArgumentException($"a kernel argument is on {t.device}, expected a CUDA tensor");
        if (!t.is_contiguous()) throw new ArgumentException($"a kernel argument of shape [{string.Join(", ", t.shape)}] is not contiguous");
        return new() { Bits = Oec.Native.LibTorchNative.Data(t) };
    }

    public static implicit operator KernelArg(int v) => new() { Bits = (uint)v };
    public static implicit operator KernelArg(long v) => new() { Bits = v };
    public static implicit operator KernelArg(float v) => new() { Bits = (uint)BitConverter.SingleToInt32Bits(v) };
}
