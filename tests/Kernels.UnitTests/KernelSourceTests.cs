// Every embedded kernel source compiles with the real NVRTC (no GPU needed: Debian's libnvrtc11.2, which
// build/install-test-deps.sh installs) for the architectures the kernels run on, so a kernel that does not compile, or
// that ptxas has to spill, fails here and not on a GPU machine.
using System.Text;
using System.Text.RegularExpressions;
using Tests;
using Xunit.Abstractions;

namespace Kernels.UnitTests;

public partial class KernelSourceTests(ITestOutputHelper log)
{
    /// <summary>The A100's and the H100's/H200's architectures, where NVRTC knows them (NVRTC 11.8 and later: both).</summary>
    static IReadOnlyList<(int, int)> Architectures()
    {
        if (KernelCompiler.Unavailable() is { } why)
            throw new Xunit.Sdk.XunitException($"{why}. Run build/install-test-deps.sh (it installs Debian's libnvrtc11.2).");
        var supported = KernelCompiler.Architectures();
        Assert.Contains(80, supported);
        return [.. new[] { 80, 90 }.Where(supported.Contains).Select(a => (a / 10, a % 10))];
    }

    [Fact]
    public void Every_kernel_source_compiles_with_NVRTC_and_every_kernel_runs_without_spills()
    {
        var sources = KernelSources.Names().Where(n => n.EndsWith(".cu")).ToList();
        Assert.Equal(["adamw.cu", "cross_entropy.cu", "layernorm.cu", "qk_norm_rotary.cu", "swiglu.cu"], sources);
        log.WriteLine($"NVRTC {KernelCompiler.Version}");
        foreach (var architecture in Architectures())
            foreach (string source in sources)
            {
                string text = KernelSources.Read(source);
                var compiled = KernelCompiler.Compile(source, text, architecture, report: true);
                Assert.Equal("\u007fELF"u8.ToArray(), compiled.Cubin[..4]);

                var kernels = Kernel().Matches(text).Select(m => m.Groups[1].Value).ToList();
                Assert.NotEmpty(kernels);
                var resources = compiled.Resources().ToDictionary(r => r.Kernel);
                foreach (string kernel in kernels)
                {
                    Assert.True(Contains(compiled.Cubin, Encoding.ASCII.GetBytes(kernel + "\0")), $"{source}: {kernel} is not in the cubin");
                    Assert.True(resources.TryGetValue(kernel, out var r), $"{source}: ptxas reported nothing for {kernel}:\n{compiled.Log}");
                    log.WriteLine($"sm_{architecture.Item1}{architecture.Item2} {r}");
                    Assert.False(r!.UsesLocalMemory, $"{source}: sm_{architecture.Item1}{architecture.Item2} {r}");
                }
            }
    }

    [Fact]
    public void A_source_NVRTC_refuses_names_itself_the_architecture_and_the_error()
    {
        Architectures();
        var e = Assert.Throws<KernelException>(() => KernelCompiler.Compile("bad.cu",
            "#include \"common.cuh\"\nextern \"C\" __global__ void k(float* y) { y[0] = not_a_builtin(1.0f); }\n", (8, 0)));
        Assert.Contains("could not compile bad.cu for sm_80", e.Message);
        Assert.Contains("not_a_builtin", e.Message);
    }

    [Fact]
    public void A_compiled_source_is_cached_on_disk_and_read_back_under_the_same_NVRTC_options_and_text()
    {
        Architectures();
        using var temp = new TempDirectory();
        var cache = new KernelCache(temp.Path);
        byte[] first = KernelCompiler.Cached(cache, "swiglu.cu", (8, 0));
        string file = Assert.Single(Directory.GetFiles(temp.Path, "*.cubin"));
        Assert.StartsWith("swiglu.cu-", Path.GetFileName(file));
        Assert.Equal(first, File.ReadAllBytes(file));
        File.WriteAllBytes(file, [.. first, 42]);                        // read back, not compiled again
        Assert.Equal([.. first, (byte)42], KernelCompiler.Cached(cache, "swiglu.cu", (8, 0)));
        KernelCompiler.Cached(cache, "swiglu.cu", (9, 0));               // another architecture: another file
        Assert.Equal(2, Directory.GetFiles(temp.Path, "*.cubin").Length);
    }

    static bool Contains(byte[] haystack, byte[] needle) => haystack.AsSpan().IndexOf(needle) >= 0;

    [GeneratedRegex(@"extern\s+""C""\s+__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)\s*\(")]
    private static partial Regex Kernel();
}
