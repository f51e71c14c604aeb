// Host copies of CUDA tensors for the TCP ring, which reads and writes host memory only (as Gloo does for GPU tensors).
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

/// <summary>The host side of one tensor for one ring operation: the tensor itself when it is on the CPU (no copy), else
/// a pinned host buffer of its dtype and numel that <see cref="Out"/> copies back. Both copies are synchronous
/// (non_blocking = false): the one to the host waits for the current CUDA stream, so kernels queued before the call
/// have written the tensor; the one back has landed when Out returns, so work queued after it sees the result.</summary>
internal sealed class HostStaging : IDisposable
{
    private readonly Tensor? device;   // the caller's CUDA tensor, flat; null when it is on the CPU
    private int released;

    /// <summary>1-D, contiguous, on the CPU: what the ring reads and writes.</summary>
    public Tensor Host { get; }

    private HostStaging(Tensor host, Tensor? device) => (Host, this.device) = (host, device);

    /// <summary>copyIn = false for a tensor the operation only writes (an output). The tensors made here belong to no
    /// dispose scope of the caller's: a queued all-reduce uses them after the caller's scope has ended.</summary>
    public static HostStaging In(Tensor tensor, bool copyIn = true)
    {
        var flat = tensor.view(-1).DetachFromDisposeScope();
        if (tensor.device_type == DeviceType.CPU) return new HostStaging(flat, null);
        using var pageable = torch.empty(flat.numel(), flat.dtype);
        var host = pageable.pin_memory().DetachFromDisposeScope();
        if (copyIn) host.copy_(flat);
        return new HostStaging(host, flat);
    }

    /// <summary>Copies the host buffer back into the CUDA tensor and releases it; once (later calls return).</summary>
    public void Out()
    {
        if (device is null || Interlocked.Exchange(ref released, 1) == 1) return;
        device.copy_(Host);
        Release();
    }

    public void Dispose()
    {
        if (device is null) Host.Dispose();
        else if (Interlocked.Exchange(ref released, 1) == 0) Release();
    }

    private void Release()
    {
        Host.Dispose();
        device!.Dispose();
    }
}
