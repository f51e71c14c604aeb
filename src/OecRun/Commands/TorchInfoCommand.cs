// `oecrun torch-info`: where libtorch came from, its version, the mapped native libraries, and whether CUDA works.
using System.CommandLine;
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
            Console.WriteLine($"libtorch version: {(source.Version is null ? "unknown" : $"{source.Version} ({source.VersionFile})")}");
            foreach (string library in ExternalLibTorch.MappedLibraries()) Console.WriteLine($"mapped: {library}");
            using var a = TorchSharp.torch.tensor(new float[] { 1, 2, 3, 4 }).view(2, 2);
            using var product = a.matmul(a);
            Console.WriteLine($"cpu matmul: [[1,2],[3,4]]^2 = [{string.Join(",", product.data<float>().ToArray())}]");
            var (gpus, cudaError) = ComputeDevice.Probe();
            Console.WriteLine($"cuda: {(gpus > 0 ? $"available, {gpus} device(s)" : $"not available{(cudaError is null ? "" : $" ({cudaError})")}")}");
            return 0;
        });
        return command;
    }
}
