// Data-parallel gradient averaging in the manner of PyTorch DDP: parameters packed into flat buckets, one all-reduce each.
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

/// <summary>Buckets are consecutive parameters (in the given, fixed order) of one dtype holding at most
/// <paramref name="bucketBytes"/> bytes; a parameter larger than that gets a bucket of its own. Every rank must pass
/// the same parameter list (same shapes, dtypes, order).</summary>
public sealed class GradientBucketer(ICommunicator comm, IReadOnlyList<Tensor> parameters, long bucketBytes = 25 * 1024 * 1024) : IDisposable
{
    private readonly Bucket[] _buckets = Plan(parameters, bucketBytes);

    /// <summary>Number of buckets (each is one all-reduce per AverageGradients).</summary>
    public int BucketCount => _buckets.Length;

    /// <summary>Overwrites every parameter with root's values, so all replicas start identical.</summary>
    public void BroadcastParameters(int root = 0)
    {
        using var _ = torch.no_grad();
        foreach (var b in _buckets)
        {
            Pack(b, p => p);
            comm.Broadcast(b.Flat, root);
            Unpack(b, (p, slice) => p.copy_(slice));
        }
    }

    /// <summary>grad = mean over ranks of grad, for every parameter; a parameter without grad counts as zeros and
    /// receives the average as a new grad.</summary>
    public void AverageGradients()
    {
        using var _ = torch.no_grad();
        foreach (var b in _buckets)
        {
            Pack(b, p => p.grad);
            comm.AllReduce(b.Flat, ReduceOp.Average);
            Unpack(b, (p, slice) =>
            {
                var g = p.grad;
                if (g is null) p.grad = slice.clone();
                else g.copy_(slice);
            });
        }
    }

    public void Dispose()
    {
        foreach (var b in _buckets) b.Flat.Dispose();
    }

    // One flat buffer [sum of numels] of one dtype, and where each parameter lives in it.
    private sealed record Bucket(Tensor Flat, (Tensor Parameter, long Offset)[] Members);

    private static Bucket[] Plan(IReadOnlyList<Tensor> parameters, long bucketBytes)
    {
        if (bucketBytes < 1) throw new ArgumentOutOfRangeException(nameof(bucketBytes), $"bucketBytes {bucketBytes} < 1");
        var buckets = new List<Bucket>();
        var current = new List<Tensor>();
        long bytes = 0;
        foreach (var p in parameters)
        {
            var size = p.numel() * p.ElementSize;
            if (current.Count > 0 && (current[0].dtype != p.dtype || bytes + size > bucketBytes))
            {
                buckets.Add(Make(current));
                (current, bytes) = (new List<Tensor>(), 0);
            }
            current.Add(p);
            bytes += size;
        }
        if (current.Count > 0) buckets.Add(Make(current));
        return buckets.ToArray();
    }

    private static Bucket Make(List<Tensor> members)
    {
        long offset = 0;
        var placed = members.Select(p => { var at = (p, offset); offset += p.numel(); return at; }).ToArray();
        return new Bucket(torch.empty(offset, members[0].dtype), placed);
    }

    // Copies select(parameter) (null: zeros) into the bucket's flat buffer.
    private static void Pack(Bucket b, Func<Tensor, Tensor?> select)
    {
        foreach (var (p, offset) in b.Members)
        {
            using var slice = b.Flat.narrow(0, offset, p.numel());
            var source = select(p);
            if (source is null) slice.zero_();
            else using (var flat = source.reshape(-1)) slice.copy_(flat);
        }
    }

    // Hands each parameter its slice of the flat buffer, shaped like the parameter.
    private static void Unpack(Bucket b, Action<Tensor, Tensor> apply)
    {
        foreach (var (p, offset) in b.Members)
        {
            using var slice = b.Flat.narrow(0, offset, p.numel());
            using var shaped = slice.view(p.shape);
            apply(p, shaped);
        }
    }
}
