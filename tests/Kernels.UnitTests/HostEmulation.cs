// Builds an Emulation/*_host.cpp program (a kernel source run on the host by cuda_host.h against an fp64 reference)
// with clang against the embedded kernel sources, and runs it.
using System.Diagnostics;
using System.Text.RegularExpressions;
using Tests;

namespace Kernels.UnitTests;

static partial class HostEmulation
{
    /// <summary>Builds Emulation/<paramref name="program"/>.cpp and runs it: its exit code (the number of misses) and its output.
    /// Throws with clang's output if the build fails.</summary>
    internal static (int Misses, string Output) Run(string program)
    {
        using var temp = WithSources();
        foreach (string source in Directory.GetFiles(temp.Path))
            File.WriteAllText(source, DynamicShared().Replace(File.ReadAllText(source), "$1* $2 = dynamic_shared<$1>()"));
        string emulation = Path.Combine(AppContext.BaseDirectory, "Emulation"), binary = temp.File(program);
        var (built, compiler) = Exec(Clang(), ["-x", "c++", "-std=c++17", "-O1", "-Wall", "-Werror",
            "-I", temp.Path, "-I", emulation, "-o", binary, Path.Combine(emulation, program + ".cpp"), "-lstdc++", "-lm"]);
        if (built != 0) throw new Xunit.Sdk.XunitException($"the host build of {program} failed:\n{compiler}");
        return Exec(binary, []);
    }

    /// <summary>A clang (Debian's: build/install-test-deps.sh installs `clang`, 14 on Debian 12).</summary>
    static string Clang()
    {
        foreach (string name in new[] { "clang-16", "clang-15", "clang", "clang-14" })
            foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':'))
                if (File.Exists(Path.Combine(dir, name))) return Path.Combine(dir, name);
        throw new Xunit.Sdk.XunitException("no clang on PATH: run build/install-test-deps.sh (it installs Debian's clang)");
    }

    /// <summary>A temporary directory holding every embedded kernel source (the include directory of the build).</summary>
    static TempDirectory WithSources()
    {
        var temp = new TempDirectory();
        foreach (string name in KernelSources.Names()) File.WriteAllText(temp.File(name), KernelSources.Read(name));
        return temp;
    }

    static (int Code, string Output) Exec(string program, IEnumerable<string> arguments)
    {
        var info = new ProcessStartInfo(program, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(info)!;
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(120_000)) { process.Kill(); throw new TimeoutException($"{program} ran over 120 s"); }
        return (process.ExitCode, stdout + stderr.Result);
    }

    // `extern __shared__ T name[]`, which C++ cannot declare on the host (cuda_host.h's __shared__ is static): spelt
    // as a pointer to the launch's dynamic shared memory.
    [GeneratedRegex(@"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]")]
    private static partial Regex DynamicShared();
}
