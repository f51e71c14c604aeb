// train.fused_kernels: whether a rank runs the fused CUDA kernels or the TorchSharp ops they replace.
using TorchSharp;

namespace Kernels;

public static class FusedKernels
{
    public static readonly string[] Settings = ["auto", "on", "off"];

    /// <summary>Throws naming train.fused_kernels and its value unless it is auto, on or off.</summary>
    public static void Validate(string setting)
    {
        if (!Settings.Contains(setting))
            throw new ArgumentException($"train.fused_kernels = '{setting}': expected one of {string.Join(", ", Settings)}");
    }

    /// <summary>
    /// The kernels of <paramref name="device"/>, or null for the reference ops. off: null. auto: the kernels on a CUDA
    /// device where the driver and NVRTC are found, else null (on a GPU, <paramref name="note"/> is told why once). on:
    /// the kernels, or an exception that names the setting and what is missing (a CPU device, no NVRTC).
    /// </summary>
    public static KernelRuntime? Resolve(string setting, torch.Device device, Action<string>? note = null)
    {
        Validate(setting);
        if (setting == "off") return null;
        if (device.type != DeviceType.CUDA)
        {
            if (setting == "on") throw new ArgumentException($"train.fused_kernels = on needs a CUDA device; the rank runs on {device} (the CPU always runs the reference ops)");
            return null;
        }
        var runtime = KernelRuntime.For(device.index < 0 ? 0 : (int)device.index, out string? why);
        if (runtime is null && setting == "on") throw new ArgumentException($"train.fused_kernels = on, but the fused kernels cannot run on {device}: {why}");
        if (runtime is null) note?.Invoke($"fused kernels off (train.fused_kernels = auto): {why}");
        return runtime;
    }
}
