// The two libtorch entry points that CUDA code outside TorchSharp needs: a tensor's data pointer (LibTorchSharp's
// THSTensor_data, which honours a view's storage offset) and a device's current CUDA stream (libtorch_cuda's C shim).
// Compiled into Collectives (the ring's host copies, NCCL) and Kernels; each assembly's DllImport resolver finds
// libtorch_cuda as libtorch loaded it.
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace Oec.Native;

static class LibTorchNative
{
    [DllImport("LibTorchSharp")] static extern IntPtr THSTensor_data(IntPtr tensor);
    [DllImport("torch_cuda")] static extern int aoti_torch_get_current_cuda_stream(int device, out IntPtr stream);

    /// <summary>The address of the tensor's element 0; IntPtr.Zero for an empty tensor.</summary>
    public static IntPtr Data(Tensor tensor) => tensor.numel() == 0 ? IntPtr.Zero : THSTensor_data(tensor.Handle);

    /// <summary>libtorch's current stream on CUDA device <paramref name="device"/>; null with libtorch's error code
    /// where it could not say.</summary>
    public static IntPtr? CurrentStream(int device, out int error)
    {
        error = aoti_torch_get_current_cuda_stream(device, out var stream);
        return error == 0 ? stream : null;
    }
}
