// Where the native files of the ELF tests lie: the NuGet cache's pristine library, the build output's copy, host libstdc++.
namespace Rank.UnitTests;

internal static class NativeFiles
{
    public const string NeededFile = "libstdc++.so.6";
    public const string NewVersion = "GLIBCXX_3.4.32"; // what TorchSharp 0.107 needs and Debian 12 lacks

    /// <summary>The pristine libLibTorchSharp.so in the NuGet cache (NUGET_PACKAGES, else ~/.nuget/packages). Never written to.</summary>
    public static string NuGetLibrary
    {
        get
        {
            string path = Path.Combine(NuGetRoot, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            Assert.True(File.Exists(path), $"the TorchSharp 0.107.0 package is not in the NuGet cache: {path} is missing");
            return path;
        }
    }

    /// <summary>The native libraries of the libtorch-cpu-linux-x64 2.10.0 package in the NuGet cache (libc10.so, libtorch_cpu.so, ...).</summary>
    public static string NuGetLibTorch
    {
        get
        {
            string path = Path.Combine(NuGetRoot, "libtorch-cpu-linux-x64", "2.10.0", "runtimes", "linux-x64", "native");
            Assert.True(File.Exists(Path.Combine(path, "libtorch_cpu.so")), $"the libtorch-cpu-linux-x64 2.10.0 package is not in the NuGet cache: {path}/libtorch_cpu.so is missing");
            return path;
        }
    }

    static string NuGetRoot =>
        Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } root ? root
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");

    /// <summary>Links <paramref name="target"/> to <paramref name="source"/> (a hard link: no copy of libtorch's 460 MB, and
    /// /proc/self/maps names the link, not the source), or copies it where the two lie on different file systems.</summary>
    public static void LinkOrCopy(string source, string target)
    {
        if (link(source, target) != 0) File.Copy(source, target);
    }

    [System.Runtime.InteropServices.DllImport("libc.so.6", SetLastError = true)]
    static extern int link(string oldpath, string newpath);

    /// <summary>The copy the build put into this test assembly's output.</summary>
    public static string OutputLibrary
    {
        get
        {
            string path = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            Assert.True(File.Exists(path), $"the build output has no {path}");
            return path;
        }
    }

    /// <summary>The host's libstdc++ (the first of the usual Debian/Ubuntu places that exists).</summary>
    public static string HostLibstdcxx
    {
        get
        {
            string[] candidates = ["/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6"];
            string? found = candidates.FirstOrDefault(File.Exists);
            Assert.True(found is not null, $"no host libstdc++ at {string.Join(" or ", candidates)}");
            return found!;
        }
    }
}
