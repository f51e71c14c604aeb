// NVRTC: a kernel source of Sources/ compiled to a cubin for one GPU architecture. Needs NVRTC only, not a GPU or a
// driver, so a machine without a GPU can compile (and test) every kernel for the architectures it will run on.
using System.Runtime.InteropServices;
using System.Text;
using System.Text.RegularExpressions;
using Kernels.Cuda;

namespace Kernels;

/// <summary>A compiled source: the cubin, and NVRTC's log (ptxas' register and spill report when asked for).</summary>
public sealed partial record CompiledSource(byte[] Cubin, string Log)
{
    /// <summary>Each kernel's resources as ptxas reported them (compiled with report: true; else none).</summary>
    public IReadOnlyList<KernelResources> Resources() =>
        [.. Report().Matches(Log).Select(m => new KernelResources(m.Groups[1].Value, int.Parse(m.Groups[5].Value),
            int.Parse(m.Groups[2].Value), int.Parse(m.Groups[3].Value), int.Parse(m.Groups[4].Value)))];

    // ptxas -v: "Function properties for NAME\n ... N bytes stack frame, S bytes spill stores, L bytes spill loads\n
    // ptxas info    : Used R registers".
    [GeneratedRegex(@"Function properties for (\w+)\s*\n.*?(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads\s*\n.*?Used (\d+) registers")]
    private static partial Regex Report();
}

/// <summary>A kernel's registers per thread and its local memory in bytes (stack frame, spill stores and loads).</summary>
public sealed record KernelResources(string Kernel, int Registers, int StackBytes, int SpillStoreBytes, int SpillLoadBytes)
{
    public bool UsesLocalMemory => StackBytes + SpillStoreBytes + SpillLoadBytes > 0;
    public override string ToString() => $"{Kernel}: {Registers} registers, {StackBytes} bytes stack, {SpillStoreBytes}/{SpillLoadBytes} bytes spilled/reloaded";
}

public static class KernelCompiler
{
    /// <summary>Null when NVRTC is found, else why not, naming every place looked in.</summary>
    public static string? Unavailable() => Native.NvrtcUnavailable();

    /// <summary>NVRTC's version, e.g. (13, 0).</summary>
    public static (int Major, int Minor) Version
    {
        get
        {
            Require();
            Native.CheckNvrtc(Native.nvrtcVersion(out int major, out int minor), "nvrtcVersion");
            return (major, minor);
        }
    }

    /// <summary>The architectures NVRTC can compile for, as 80, 90, ...</summary>
    public static IReadOnlyList<int> Architectures()
    {
        Require();
        Native.CheckNvrtc(Native.nvrtcGetNumSupportedArchs(out int count), "nvrtcGetNumSupportedArchs");
        var architectures = new int[count];
        Native.CheckNvrtc(Native.nvrtcGetSupportedArchs(architectures), "nvrtcGetSupportedArchs");
        return architectures;
    }

    /// <summary>The options of every compilation: the device's architecture (a cubin, no PTX to JIT), C++17, IEEE
    /// arithmetic (no fast math: the kernels must give the references' numbers). No -lineinfo: NVRTC 11.8 crashes the
    /// process compiling swiglu.cu with it for sm_90, and only a profiler's source view reads it.</summary>
    public static IReadOnlyList<string> Options((int Major, int Minor) architecture) =>
        [$"--gpu-architecture=sm_{architecture.Major}{architecture.Minor}", "--std=c++17", "-default-device"];

    /// <summary>The cubin of embedded source <paramref name="source"/> (e.g. "layernorm.cu") for <paramref
    /// name="architecture"/>, from <paramref name="cache"/> when compiled before under the same NVRTC, options and text.</summary>
    public static byte[] Cached(KernelCache cache, string source, (int Major, int Minor) architecture) =>
        cache.GetOrAdd(source, Key(source, architecture), () => Compile(source, KernelSources.Read(source), architecture).Cubin);

    /// <summary>The cache key of embedded source <paramref name="source"/>: NVRTC's version, the options, the text and
    /// the headers'.</summary>
    public static string Key(string source, (int Major, int Minor) architecture) =>
        KernelCache.Key([$"nvrtc {Version}", .. Options(architecture), source, KernelSources.Read(source),
            .. KernelSources.Headers().SelectMany(h => new[] { h.Name, h.Text })]);

    /// <summary>Compiles <paramref name="text"/>, named <paramref name="source"/>, with the embedded headers; with
    /// <paramref name="report"/>, the log holds ptxas' registers, stack and spills of every function. A source that
    /// does not compile throws a KernelException with NVRTC's log.</summary>
    public static CompiledSource Compile(string source, string text, (int Major, int Minor) architecture, bool report = false)
    {
        Require();
        var headers = KernelSources.Headers();
        string[] options = [.. Options(architecture), .. report ? new[] { "--ptxas-options=-v" } : []];
        var strings = new List<IntPtr>();
        IntPtr Utf8(string s) { var p = Marshal.StringToCoTaskMemUTF8(s); strings.Add(p); return p; }
        try
        {
            Native.CheckNvrtc(Native.nvrtcCreateProgram(out var program, text, source, headers.Count,
                headers.Select(h => Utf8(h.Text)).ToArray(), headers.Select(h => Utf8(h.Name)).ToArray()), $"nvrtcCreateProgram({source})");
            try
            {
                int compiled = Native.nvrtcCompileProgram(program, options.Length, options.Select(Utf8).ToArray());
                Native.nvrtcGetProgramLogSize(program, out nuint size);
                var log = new byte[(int)size];
                Native.nvrtcGetProgramLog(program, log);
                string logText = Encoding.UTF8.GetString(log).TrimEnd('\0', '\n');
                if (compiled != 0)
                {
                    var (major, minor) = Version;
                    throw new KernelException($"NVRTC {major}.{minor} could not compile {source} for sm_{architecture.Major}{architecture.Minor}:\n{logText}");
                }
                Native.CheckNvrtc(Native.nvrtcGetCUBINSize(program, out nuint cubinSize), "nvrtcGetCUBINSize");
                var cubin = new byte[(int)cubinSize];
                Native.CheckNvrtc(Native.nvrtcGetCUBIN(program, cubin), "nvrtcGetCUBIN");
                return new(cubin, logText);
            }
            finally { Native.nvrtcDestroyProgram(ref program); }
        }
        finally { strings.ForEach(Marshal.FreeCoTaskMem); }
    }

    static void Require()
    {
        if (Unavailable() is { } why) throw new KernelException(why);
    }
}
