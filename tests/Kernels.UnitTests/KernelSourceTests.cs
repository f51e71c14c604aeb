// Every embedded kernel source type-checks as CUDA device code (clang's CUDA front end, with NVRTC's built-ins
// declared), so a typo in a kernel fails here and not on a GPU machine.
using System.Diagnostics;
using Tests;
using Xunit.Abstractions;

namespace Kernels.UnitTests;

public class KernelSourceTests(ITestOutputHelper log)
{
    /// <summary>A clang with the NVPTX target (Debian's: build/install-test-deps.sh installs `clang`, 14 on Debian 12).</summary>
    internal static string Clang()
    {
        foreach (string name in new[] { "clang-16", "clang-15", "clang", "clang-14" })
            foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
                if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        throw new Xunit.Sdk.XunitException("no clang on PATH: run build/install-test-deps.sh (it installs Debian's clang)");
    }

    [Fact]
    public void Every_kernel_source_type_checks_as_CUDA_device_code_with_only_NVRTC_built_ins()
    {
        using var temp = WithSources();
        string builtins = Path.Combine(AppContext.BaseDirectory, "nvrtc-builtins.h");
        var sources = KernelSources.Names().Where(n => n.EndsWith(".cu")).ToList();
        Assert.NotEmpty(sources);
        foreach (string source in sources)
        {
            var (code, output) = Run(Clang(), ["-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80", "-nocudainc", "-nocudalib",
                "-fsyntax-only", "-std=c++17", "-Werror", "-include", builtins, "-I", temp.Path, temp.File(source)]);
            log.WriteLine($"{source}: clang exit {code}");
            Assert.True(code == 0, $"{source} does not type-check:\n{output}");
        }
    }

    [Fact]
    public void A_source_that_calls_what_NVRTC_does_not_provide_is_refused()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("bad.cu"), "extern \"C\" __global__ void k(float* y) { y[0] = not_a_builtin(1.0f); }\n");
        var (code, output) = Run(Clang(), ["-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80", "-nocudainc", "-nocudalib",
            "-fsyntax-only", "-include", Path.Combine(AppContext.BaseDirectory, "nvrtc-builtins.h"), temp.File("bad.cu")]);
        Assert.NotEqual(0, code);
        Assert.Contains("not_a_builtin", output);
    }

    /// <summary>A temporary directory holding every embedded kernel source (the include directory of a compilation).</summary>
    internal static TempDirectory WithSources()
    {
        var temp = new TempDirectory();
        foreach (string name in KernelSources.Names()) File.WriteAllText(temp.File(name), KernelSources.Read(name));
        return temp;
    }

    internal static (int Code, string Output) Run(string program, IEnumerable<string> arguments)
    {
        var info = new ProcessStartInfo(program, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(120_000)) { process.Kill(); throw new TimeoutException($"{program} ran over 120 s"); }
        return (process.ExitCode, stdout + stderr.Result);
    }
}
