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
            string? root = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
            if (string.IsNullOrEmpty(root))
                root = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
            string path = Path.Combine(root, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
            Assert.True(File.Exists(path), $"the TorchSharp 0.107.0 package is not in the NuGet cache: {path} is missing");
            return path;
        }
    }

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
