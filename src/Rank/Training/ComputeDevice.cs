// train.device to a torch device: the CPU, or the GPU of this rank's LOCAL_RANK, with a refusal that says what was found.
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.Training;

public static class ComputeDevice
{
    /// <summary>
    /// cpu: the CPU. cuda: cuda:<paramref name="localRank"/>, the GPU of this rank on its machine (torchrun's
    /// LOCAL_RANK; `oecrun train` is local rank 0). Also sets TF32 for fp32 matmuls on the GPU, as PyTorch users set
    /// it for training (fp32 weights, 10-bit mantissa products, fp32 accumulation). Throws naming what was found (the
    /// libtorch that was loaded, whether it has CUDA, the GPUs it sees) and what was expected.
    /// </summary>
    public static Device Select(string setting, int localRank)
    {
        if (setting == "cpu") return CPU;
        if (setting != "cuda") throw new ArgumentException($"train.device = '{setting}': expected cpu or cuda");
        var (count, initError) = Probe();
        if (localRank >= count)
            throw new InvalidOperationException($"train.device = cuda for local rank {localRank}: expected a libtorch with CUDA and at least {localRank + 1} GPU(s); found {Describe(count, initError)}");
        backends.cuda.matmul.allow_tf32 = true;
        backends.cudnn.allow_tf32 = true;
        return new Device(DeviceType.CUDA, localRank);
    }

    /// <summary>The GPU of a rank whose ranks may share GPUs (job.backend = tcp: the ring stages CUDA tensors through host
    /// memory, so ranks need not own a GPU each): LOCAL_RANK modulo the GPUs visible; LOCAL_RANK where none is, for
    /// <see cref="Select"/> to refuse.</summary>
    public static int SharedGpu(int localRank)
    {
        var (count, _) = Probe();
        return count > 0 ? localRank % count : localRank;
    }

    /// <summary>The CUDA devices libtorch sees (0 without CUDA), and CUDA's first line of complaint where it did not start.</summary>
    public static (int Count, string? Error) Probe()
    {
        TorchRuntime.EnsureLoaded();
        try
        {
            InitializeDeviceType(DeviceType.CUDA);
            return (cuda.is_available() ? cuda.device_count() : 0, null);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            string first = e.Message.Split('\n')[0];
            int trace = first.IndexOf(" Trace from", StringComparison.Ordinal); // TorchSharp appends where it failed
            return (0, trace > 0 ? first[..trace] : first);
        }
    }

    static string Describe(int count, string? initError)
    {
        var source = TorchRuntime.Source;
        string libtorch = source?.Directory is null
            ? "the libtorch bundled with oecrun (CPU only: the libtorch-cpu package; set OEC_LIBTORCH to a PyTorch install's torch/lib with a -p:LibTorch=none build, see build/publish-bundle.sh)"
            : $"libtorch {source.Version ?? "(version unknown)"} from {source.Directory}";
        bool cudaLibrary = source?.Libraries.Any(l => Path.GetFileName(l) == "libtorch_cuda.so") == true;
        return $"{libtorch}; {(source?.Directory is null ? "" : cudaLibrary ? "libtorch_cuda.so loaded; " : "no libtorch_cuda.so in it (a CPU-only build); ")}" +
               $"{count} CUDA device(s) visible (CUDA_VISIBLE_DEVICES={Environment.GetEnvironmentVariable("CUDA_VISIBLE_DEVICES") ?? "(unset)"})" +
               (initError is null ? "" : $"; CUDA initialisation said: {initError}");
    }
}
