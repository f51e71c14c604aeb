// `oecrun torch-info`: where libtorch came from, its version, the mapped native libraries, and whether CUDA works.
using System.CommandLine;
using System.Text.Json;
using Rank;
using Rank.Training;

namespace OecRun.Commands;

public static class TorchInfoCommand
{
    public static Command Create()
    {
        var command = new Command("torch-info", $"Load libtorch as training would (the bundled copy, or {ExternalLibTorch.Variable}) and print where it came from, " +
                                                "its version, the native libraries mapped into this process, a CPU matmul and whether CUDA is available.");
        command.SetGuardedAction(_ =>
        {
            TorchRuntime.EnsureLoaded();
            var source = TorchRuntime.Source!;
            Console.WriteLine($"TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}");
            Console.WriteLine(source.Directory is null ? $"libtorch: bundled with oecrun ({ExternalLibTorch.BundledLibTorch()})"
                : $"libtorch: {source.Directory} ({ExternalLibTorch.Variable}={source.Setting})");
            var (version, from) = source.Directory is null ? BundledVersion() : (source.Version, source.VersionFile);
            Console.WriteLine($"libtorch version: {(version is null ? "unknown" : $"{version} ({from})")}");
            foreach (string library in ExternalLibTorch.MappedLibraries()) Console.WriteLine($"mapped: {library}");
            using var a = TorchSharp.torch.tensor(new float[] { 1, 2, 3, 4 }).view(2, 2);
            using var product = a.matmul(a);
            Console.WriteLine($"cpu matmul: [[1,2],[3,4]]^2 = [{string.Join(",", product.data<float>().ToArray())}]");
            var (gpus, cudaError) = ComputeDevice.Probe();
            Console.WriteLine($"cuda: {(gpus > 0 ? $"available, {gpus} device(s)" : $"not available{(cudaError is null ? "" : $" ({cudaError})")}")}");
            var kernels = Kernels.KernelRuntime.For(0, out string? why);
            Console.WriteLine(kernels is null ? $"fused kernels: unavailable ({why})"
                : $"fused kernels: available on cuda:0 (sm_{kernels.Architecture.Major}{kernels.Architecture.Minor}, NVRTC {kernels.CompilerVersion.Major}.{kernels.CompilerVersion.Minor})");
            if (kernels is null && Kernels.KernelCompiler.Unavailable() is null) // NVRTC without a GPU: the kernels compile here
                Console.WriteLine($"nvrtc: {Kernels.KernelCompiler.Version.Major}.{Kernels.KernelCompiler.Version.Minor}, " +
                                  $"compiles for sm_{string.Join(", sm_", Kernels.KernelCompiler.Architectures())} (oecrun kernels --compile)");
            return 0;
        });
        return command;
    }

    /// <summary>The bundled libtorch's version: that of the libtorch package in the program's .deps.json
    /// ("libtorch-cpu-linux-x64/2.10.0" gives 2.10.0), with where it was read; (null, null) when none is listed.</summary>
    static (string? Version, string? From) BundledVersion()
    {
        foreach (string deps in (AppContext.GetData("APP_CONTEXT_DEPS_FILES") as string ?? "").Split(';', StringSplitOptions.RemoveEmptyEntries))
        {
            using var json = JsonDocument.Parse(File.ReadAllText(deps));
            if (!json.RootElement.TryGetProperty("libraries", out var libraries)) continue;
            foreach (var library in libraries.EnumerateObject())
                if (library.Name.StartsWith("libtorch-", StringComparison.Ordinal) && library.Name.Split('/') is [var package, var version])
                    return (version, $"package {package} in {Path.GetFileName(deps)}");
        }
        return (null, null);
    }
}
