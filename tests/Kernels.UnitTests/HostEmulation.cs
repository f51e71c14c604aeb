// Builds an Emulation/*_host.cpp program (a kernel source run on the host by cuda_host.h against an fp64 reference)
// with clang against the embedded kernel sources, and runs it.
using System.Text.RegularExpressions;

namespace Kernels.UnitTests;

static partial class HostEmulation
{
    /// <summary>Builds Emulation/<paramref name="program"/>.cpp and runs it: its exit code (the number of misses) and its output.
    /// Throws with clang's output if the build fails.</summary>
    internal static (int Misses, string Output) Run(string program)
    {
        using var temp = KernelSourceTests.WithSources();
        foreach (string source in Directory.GetFiles(temp.Path))
            File.WriteAllText(source, DynamicShared().Replace(File.ReadAllText(source), "$1* $2 = dynamic_shared<$1>()"));
        string emulation = Path.Combine(AppContext.BaseDirectory, "Emulation"), binary = temp.File(program);
        var (built, compiler) = KernelSourceTests.Run(KernelSourceTests.Clang(), ["-x", "c++", "-std=c++17", "-O1", "-Wall", "-Werror",
            "-I", temp.Path, "-I", emulation, "-o", binary, Path.Combine(emulation, program + ".cpp"), "-lstdc++", "-lm"]);
        if (built != 0) throw new Xunit.Sdk.XunitException($"the host build of {program} failed:\n{compiler}");
        return KernelSourceTests.Run(binary, []);
    }

    // `extern __shared__ T name[]`, which C++ cannot declare on the host (cuda_host.h's __shared__ is static): spelt
    // as a pointer to the launch's dynamic shared memory.
    [GeneratedRegex(@"extern\s+__shared__\s+(\w+)\s+(\w+)\s*\[\s*\]")]
    private static partial Regex DynamicShared();
}
