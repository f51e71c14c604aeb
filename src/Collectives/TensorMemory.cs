// Raw access to the bytes of contiguous CPU tensors, argument checks, overlap, and the element-wise reduction of received segments.
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

internal static class TensorMemory
{
    private static readonly HashSet<ScalarType> Supported =
    [
        ScalarType.Float32, ScalarType.Float64, ScalarType.BFloat16, ScalarType.Float16,
        ScalarType.Int64, ScalarType.Int32, ScalarType.Int16, ScalarType.Int8, ScalarType.Byte,
    ];

    /// <summary>Address of element 0; IntPtr.Zero for an empty tensor.</summary>
    public static IntPtr Data(Tensor tensor) => Oec.Native.LibTorchNative.Data(tensor);

    /// <summary>True when the two tensors' bytes share an address (a view of the other, or views of one storage).</summary>
    public static bool Overlap(Tensor a, Tensor b)
    {
        if (a.numel() == 0 || b.numel() == 0) return false;
        long pa = Data(a), pb = Data(b);
        return pa < pb + b.numel() * ElementBytes(b) && pb < pa + a.numel() * ElementBytes(a);
    }

    /// <summary>Bytes per element.</summary>
    public static int ElementBytes(Tensor tensor) => (int)tensor.ElementSize;

    public static bool IsFloating(ScalarType t) =>
        t is ScalarType.Float32 or ScalarType.Float64 or ScalarType.BFloat16 or ScalarType.Float16;

    /// <summary>Throws ArgumentException naming the rank, the argument and the offending value.</summary>
    public static void Check(Tensor tensor, string name, int rank)
    {
        if (tensor.device_type is not (DeviceType.CPU or DeviceType.CUDA))
            throw new ArgumentException($"rank {rank}: {name} is on {tensor.device}; the TCP ring takes CPU tensors, and CUDA tensors through host memory", name);
        if (!tensor.is_contiguous())
            throw new ArgumentException($"rank {rank}: {name} (shape [{string.Join(", ", tensor.shape)}]) is not contiguous", name);
        if (!Supported.Contains(tensor.dtype))
            throw new ArgumentException($"rank {rank}: {name} has dtype {tensor.dtype}; supported: {string.Join(", ", Supported)}", name);
    }

    /// <summary>target op= source, element-wise; both 1-D of equal length and dtype. Sum and Average both add here.
    /// fp16/bf16 accumulate in their own dtype (as NCCL does).</summary>
    public static void Reduce(Tensor target, Tensor source, ReduceOp op)
    {
        switch (op)
        {
            case ReduceOp.Sum:
            case ReduceOp.Average:
                target.add_(source);
                break;
            case ReduceOp.Max:
                using (var m = torch.maximum(target, source)) target.copy_(m);
                break;
            case ReduceOp.Min:
                using (var m = torch.minimum(target, source)) target.copy_(m);
                break;
            default:
                throw new ArgumentOutOfRangeException(nameof(op), op, "unknown ReduceOp");
        }
    }

    /// <summary>The Average step after a Sum: divide by the group size; floor division on integer dtypes.</summary>
    public static void DivideBy(Tensor tensor, int worldSize)
    {
        if (worldSize == 1 || tensor.numel() == 0) return;
        if (IsFloating(tensor.dtype)) tensor.div_(worldSize);
        else tensor.div_(worldSize, RoundingMode.floor);
    }
}
