// Loads libtorch through TorchSharp (the bundled copy, or the one OEC_LIBTORCH names), and when that fails says why in one line.
using System.Runtime.InteropServices;
using TorchSharp;

namespace Rank;

public static class TorchRuntime
{
    static readonly Lock Gate = new();
    static LibTorchSource? source;

    /// <summary>Where the loaded libtorch came from; null before <see cref="EnsureLoaded"/>.</summary>
    public static LibTorchSource? Source => source;

    /// <summary>
    /// Initialises TorchSharp's CPU backend, first loading libtorch from OEC_LIBTORCH when it is set
    /// (<see cref="ExternalLibTorch"/>). TorchSharp swallows the dynamic loader's error and reports a missing
    /// libtorch package instead; on failure this loads libLibTorchSharp.so directly to obtain the loader's own
    /// message (e.g. "version `GLIBCXX_3.4.32' not found") and throws it as one line.
    /// </summary>
    public static void EnsureLoaded()
    {
        KeepFreedMemory();
        lock (Gate)
        {
            if (source is null)
            {
                var resolved = ExternalLibTorch.Resolve(Environment.GetEnvironmentVariable(ExternalLibTorch.Variable), Console.Error);
                ExternalLibTorch.Load(resolved);
                source = resolved;
            }
        }
        try
        {
            torch.InitializeDeviceType(DeviceType.CPU);
        }
        catch (Exception e)
        {
            string library = LibTorchSharpPath();
            throw new InvalidOperationException($"TorchSharp failed to load: {LoaderError(library) ?? OneLine(e.Message)}", e);
        }
    }

    /// <summary>
    /// Makes glibc malloc keep and reuse freed memory instead of returning it: every step allocates and frees the
    /// same large tensors (logits [B*T, V] are 100 MB at B*T = 512, V = 50304), and glibc serves each allocation
    /// above 32 MB with a fresh mmap whose pages fault in again. On the development VMs that made a step of a tiny
    /// model with GPT-2's vocabulary 6x slower (docs/benchmarks.md). The process keeps its peak heap instead.
    /// Where the C library is not glibc, nothing changes.
    /// glibc applies this to the main arena, the one the process's main thread allocates from, where the training
    /// loop runs; a request above 64 MB from another thread's arena is still served by mmap.
    /// </summary>
    static void KeepFreedMemory()
    {
        if (!OperatingSystem.IsLinux() || KeepsFreedMemory) return;
        try
        {
            // no mmap per allocation: large blocks come from the heap and are reused; never trim the heap's top
            KeepsFreedMemory = mallopt(MMmapMax, 0) == 1 & mallopt(MTrimThreshold, int.MaxValue) == 1;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
        }
    }

    /// <summary>True once glibc accepted both settings of <see cref="KeepFreedMemory"/>.</summary>
    public static bool KeepsFreedMemory { get; private set; }

    const int MTrimThreshold = -1, MMmapMax = -4; // glibc malloc.h

    [DllImport("libc.so.6")]
    static extern int mallopt(int param, int value);

    /// <summary>Where the build puts libLibTorchSharp.so (runtimes/linux-x64/native, or beside the assembly when published).</summary>
    public static string LibTorchSharpPath()
    {
        string name = OperatingSystem.IsWindows() ? "LibTorchSharp.dll" : OperatingSystem.IsMacOS() ? "libLibTorchSharp.dylib" : "libLibTorchSharp.so";
        string rid = RuntimeInformation.RuntimeIdentifier;
        string[] candidates =
        [
            Path.Combine(AppContext.BaseDirectory, "runtimes", rid, "native", name),
            Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", name),
            Path.Combine(AppContext.BaseDirectory, name),
        ];
        return candidates.FirstOrDefault(File.Exists) ?? candidates[^1];
    }

    /// <summary>The dynamic loader's message for <paramref name="library"/> in one line, or null if it loads.</summary>
    public static string? LoaderError(string library)
    {
        if (!File.Exists(library)) return $"{library}: not found";
        try
        {
            NativeLibrary.Free(NativeLibrary.Load(library));
            return null;
        }
        catch (DllNotFoundException e)
        {
            return OneLine(e.Message);
        }
        catch (BadImageFormatException e)
        {
            return OneLine(e.Message);
        }
    }

    static string OneLine(string text) =>
        string.Join(" ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
