// OEC_LIBTORCH for real: a child `oecrun torch-info` without a bundled libtorch loading the one a directory names, the
// version checks it makes, and the LibTorch build switch as `dotnet msbuild` evaluates it.
using System.Diagnostics;
using System.Runtime.Versioning;
using System.Text.Json;
using Rank;
using Rank.UnitTests;

namespace OecRun.FunctionalTests;

/// <summary>This test build's oecrun without the libtorch-cpu package's files, as a -p:LibTorch=none build has it:
/// every other file of the output, hard-linked into a temporary directory once for the test class.</summary>
public sealed class NoLibTorchApp : IDisposable
{
    readonly TempDirectory temp = new();

    public NoLibTorchApp()
    {
        var libtorchFiles = Directory.GetFiles(NativeFiles.NuGetLibTorch).Select(Path.GetFileName).ToHashSet();
        string output = AppContext.BaseDirectory;
        foreach (string file in Directory.GetFiles(output, "*", SearchOption.AllDirectories))
        {
            if (libtorchFiles.Contains(Path.GetFileName(file))) continue;
            string target = Path.Combine(temp.Path, Path.GetRelativePath(output, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            NativeFiles.LinkOrCopy(file, target);
        }
    }

    public string Dll => Path.Combine(temp.Path, "oecrun.dll");

    public void Dispose() => temp.Dispose();
}

[SupportedOSPlatform("linux")] // ELF libraries, /proc/self/maps
public class ExternalLibTorchProcessTests(NoLibTorchApp app) : IClassFixture<NoLibTorchApp>
{
    static readonly string[] NeededFiles = ["libc10.so", "libtorch_cpu.so", "libtorch.so", "libgomp-98b21ff3.so.1"]; // libgomp: libtorch_cpu's RUNPATH $ORIGIN

    /// <summary>temp/torch/lib holding the NuGet package's libtorch (linked), and temp/torch/version.py when a version is given:
    /// the layout of a PyTorch install.</summary>
    static string PyTorchLayout(TempDirectory temp, string? version)
    {
        string lib = Path.Combine(temp.Path, "torch", "lib");
        Directory.CreateDirectory(lib);
        foreach (string file in NeededFiles) NativeFiles.LinkOrCopy(Path.Combine(NativeFiles.NuGetLibTorch, file), Path.Combine(lib, file));
        if (version is not null) File.WriteAllText(Path.Combine(temp.Path, "torch", "version.py"), $"__version__ = '{version}'\ndebug = False\n");
        return lib;
    }

    (int Code, string Output, string Errors) TorchInfo(string? libtorch, string? anyVersion = null)
    {
        string dotnet = Environment.ProcessPath is string p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var info = new ProcessStartInfo(dotnet, [app.Dll, "torch-info"]) { RedirectStandardOutput = true, RedirectStandardError = true };
        info.Environment.Remove(ExternalLibTorch.Variable);
        info.Environment.Remove(ExternalLibTorch.AnyVersionVariable);
        if (libtorch is not null) info.Environment[ExternalLibTorch.Variable] = libtorch;
        if (anyVersion is not null) info.Environment[ExternalLibTorch.AnyVersionVariable] = anyVersion;
        using var process = Process.Start(info)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var errors = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(120)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail("oecrun torch-info did not finish within 120 s");
        }
        return (process.ExitCode, output.Result, errors.Result);
    }

    static string[] Mapped(string output, string file) =>
        output.Split('\n').Where(l => l.StartsWith("mapped: ", StringComparison.Ordinal)).Select(l => l["mapped: ".Length..].Trim())
            .Where(path => Path.GetFileName(path) == file).ToArray();

    [Fact]
    public void Torch_info_maps_the_libtorch_that_OEC_LIBTORCH_names_and_no_other_copy()
    {
        using var temp = new TempDirectory();
        string lib = PyTorchLayout(temp, "2.10.0+cpu");

        var (code, output, errors) = TorchInfo(lib);

        Assert.True(code == 0, $"exit code {code}\n{output}\n{errors}");
        Assert.Equal([Path.Combine(lib, "libtorch_cpu.so")], Mapped(output, "libtorch_cpu.so"));
        Assert.Equal([Path.Combine(lib, "libc10.so")], Mapped(output, "libc10.so"));
        Assert.Equal([Path.Combine(lib, "libtorch.so")], Mapped(output, "libtorch.so"));
        Assert.Single(Mapped(output, "libLibTorchSharp.so"));
        Assert.Contains($"libtorch version: 2.10.0+cpu ({Path.Combine(temp.Path, "torch", "version.py")})", output);
        Assert.Contains("cpu matmul: [[1,2],[3,4]]^2 = [7,10,15,22]", output);
        Assert.DoesNotContain("warning", errors);
    }

    [Fact]
    public void Without_a_version_file_torch_info_warns_and_loads_anyway()
    {
        using var temp = new TempDirectory();
        string lib = PyTorchLayout(temp, version: null);

        var (code, output, errors) = TorchInfo(lib);

        Assert.True(code == 0, $"exit code {code}\n{output}\n{errors}");
        Assert.Contains($"warning: OEC_LIBTORCH={lib}: no libtorch version found", errors);
        Assert.Contains("libtorch version: unknown", output);
        Assert.Equal([Path.Combine(lib, "libtorch_cpu.so")], Mapped(output, "libtorch_cpu.so"));
    }

    [Fact]
    public void Another_minor_version_exits_2_naming_found_and_expected_unless_OEC_LIBTORCH_ANY_VERSION_is_1()
    {
        using var temp = new TempDirectory();
        string lib = PyTorchLayout(temp, "2.11.0+cu130");

        var refused = TorchInfo(lib);
        var accepted = TorchInfo(lib, anyVersion: "1");

        Assert.Equal(2, refused.Code);
        Assert.Contains($"error: OEC_LIBTORCH={lib}: libtorch 2.11.0+cu130 (from {Path.Combine(temp.Path, "torch", "version.py")})", refused.Errors);
        Assert.Contains("found 2.11, expected 2.10", refused.Errors);
        Assert.Empty(Mapped(refused.Output, "libtorch_cpu.so"));
        Assert.True(accepted.Code == 0, $"exit code {accepted.Code}\n{accepted.Output}\n{accepted.Errors}");
        Assert.Contains("warning:", accepted.Errors);
        Assert.Contains("found 2.11, expected 2.10", accepted.Errors);
    }

    [Fact]
    public void Without_a_bundled_libtorch_and_without_OEC_LIBTORCH_torch_info_exits_2_asking_for_it()
    {
        var (code, _, errors) = TorchInfo(libtorch: null);

        Assert.Equal(2, code);
        Assert.Contains("error: OEC_LIBTORCH is not set, and this oecrun has no libtorch of its own (built with -p:LibTorch=none)", errors);
    }

    static (int Code, string Output) MsBuild(params string[] arguments)
    {
        string dotnet = Environment.ProcessPath is string p && Path.GetFileNameWithoutExtension(p) == "dotnet" ? p : "dotnet";
        var info = new ProcessStartInfo(dotnet, ["msbuild", Path.Combine(TestPrograms.RepositoryRoot, "src", "OecRun", "OecRun.csproj"), "-nologo", "-nodeReuse:false", .. arguments])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var process = Process.Start(info)!;
        var errors = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        return (process.ExitCode, output + errors.Result);
    }

    static string[] PackageReferences(string libTorch)
    {
        var (code, output) = MsBuild("-getItem:PackageReference", $"-p:LibTorch={libTorch}");
        Assert.True(code == 0, output);
        using var json = JsonDocument.Parse(output);
        return json.RootElement.GetProperty("Items").GetProperty("PackageReference").EnumerateArray()
            .Select(item => item.GetProperty("Identity").GetString()!).ToArray();
    }

    [Fact]
    public void The_LibTorch_switch_bundles_libtorch_cpu_by_default_TorchSharps_CUDA_package_with_cuda_and_only_TorchSharp_with_none()
    {
        string[] byDefault = PackageReferences("cpu");
        string[] none = PackageReferences("none");
        string[] gpu = PackageReferences("cuda"); // the references only: TorchSharp-cuda-linux is not served here, so never restored
        var (code, output) = MsBuild("-t:CollectPackageReferences", "-p:LibTorch=rocm");

        Assert.Contains("TorchSharp-cpu", byDefault);
        Assert.DoesNotContain("TorchSharp", byDefault);
        Assert.Contains("TorchSharp", none);
        Assert.DoesNotContain("TorchSharp-cpu", none);
        Assert.Contains("TorchSharp-cuda-linux", gpu);
        Assert.DoesNotContain("TorchSharp-cpu", gpu);
        Assert.NotEqual(0, code);
        Assert.Contains("-p:LibTorch=rocm: expected cpu (bundle the libtorch-cpu NuGet package), cuda (bundle TorchSharp-cuda-linux) or none", output);
    }
}
