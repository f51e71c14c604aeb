// Where the GPU tests run: a CUDA device with the kernel runtime (driver and NVRTC); elsewhere they skip.
using Kernels;
using TorchSharp;

namespace Kernels.UnitTests;

static class Gpu
{
    /// <summary>The runtime of cuda:0, or a skip that says why there is none.</summary>
    public static KernelRuntime Runtime()
    {
        Skip.IfNot(torch.cuda.is_available(), "needs a CUDA device");
        var runtime = KernelRuntime.For(0, out string? why);
        Skip.If(runtime is null, $"the kernel runtime is unavailable: {why}");
        return runtime!;
    }
}
