// Loads libtorch through TorchSharp, and when that fails says why in one line.
using System.Runtime.InteropServices;
using TorchSharp;

namespace Rank;

public static class TorchRuntime
{
    /// <summary>
    /// Initialises TorchSharp's CPU backend. TorchSharp swallows the dynamic loader's error and reports a missing
    /// libtorch package instead; on failure this loads libLibTorchSharp.so directly to obtain the loader's own
    /// message (e.g. "version `GLIBCXX_3.4.32' not found") and throws it as one line.
    /// </summary>
    public static void EnsureLoaded()
    {
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
