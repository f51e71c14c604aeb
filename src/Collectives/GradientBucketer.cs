// Data-parallel gradient averaging in the manner of PyTorch DDP: parameters packed into flat buckets, one all-reduce
// each, optionally started group by group during the backward pass (Ready) so communication overlaps it.
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

/// <summary>Buckets are consecutive parameters (in the given, fixed order) of one dtype holding at most
/// <paramref name="bucketBytes"/> bytes; a parameter larger than that gets a bucket of its own; a bucket never spans
/// two groups. Every rank must pass the same parameter lists (same shapes, dtypes, order).</summary>
public sealed class GradientBucketer : IDisposable
{
    private readonly ICommunicator _comm;
    private readonly Bucket[][] _groups;               // [group][bucket of that group]
    private readonly Bucket[] _buckets;                // all, group by group: the order of every all-reduce
    private readonly IPendingCollective[]?[] _pending; // [group]: its started all-reduces this round; null = not started
    private readonly object _gate = new();             // Ready runs on the autograd thread

    /// <summary>All parameters as one group: no overlap unless Ready(0) is called.</summary>
    public GradientBucketer(ICommunicator comm, IReadOnlyList<Tensor> parameters, long bucketBytes = 25 * 1024 * 1024)
        : this(comm, [parameters], bucketBytes) { }

    /// <summary><paramref name="groups"/> in the order their gradients become final in the backward pass (the last
    /// block first); <see cref="Ready"/> starts one group's all-reduces.</summary>
    public GradientBucketer(ICommunicator comm, IReadOnlyList<IReadOnlyList<Tensor>> groups, long bucketBytes = 25 * 1024 * 1024)
    {
        if (bucketBytes < 1) throw new ArgumentOutOfRangeException(nameof(bucketBytes), $"bucketBytes {bucketBytes} < 1");
        _comm = comm;
        _groups = groups.Select(g => Plan(g, bucketBytes)).ToArray();
        _buckets = _groups.SelectMany(g => g).ToArray();
        _pending = new IPendingCollective[]?[_groups.Length];
    }

    /// <summary>Number of buckets (each is one all-reduce per AverageGradients).</summary>
    public int BucketCount => _buckets.Length;

    public int GroupCount => _groups.Length;

    /// <summary>Overwrites every parameter with root's values, so all replicas start identical.</summary>
    public void BroadcastParameters(int root = 0)
    {
        using var _ = torch.no_grad();
        lock (_gate)
            if (_pending.Any(p => p is not null))
                throw new InvalidOperationException("BroadcastParameters during a round of Ready: call AverageGradients first");
        foreach (var b in _buckets)
        {
            Pack(b, p => p);
            _comm.Broadcast(b.Flat, root);
            Unpack(b, (p, slice) => p.copy_(slice));
        }
    }

    /// <summary>The gradients of <paramref name="group"/> are final: packs them and starts their all-reduces
    /// (Average). Called during backward, at most once per group and round; any group order, the same on all ranks.</summary>
    public void Ready(int group)
    {
        if (group < 0 || group >= _groups.Length)
            throw new ArgumentOutOfRangeException(nameof(group), $"group {group} outside [0, {_groups.Length})");
        lock (_gate)
        {
            if (_pending[group] is not null)
                throw new InvalidOperationException($"Ready({group}) called twice in one round: group {group} is already started; AverageGradients ends a round");
            Start(group);
        }
    }

    /// <summary>grad = mean over ranks of grad, for every parameter; a parameter without grad counts as zeros and
    /// receives the average as a new grad. After Ready: starts the groups not yet started (in group order), waits for
    /// all and unpacks; the same buckets and reductions as without Ready, so the same bits.</summary>
    public void AverageGradients()
    {
        using var _ = torch.no_grad();
        lock (_gate)
        {
            if (_pending.All(p => p is null))
            {
                foreach (var b in _buckets)
                {
                    Pack(b, p => p.grad);
                    _comm.AllReduce(b.Flat, ReduceOp.Average);
                    Unpack(b, SetGrad);
                }
                return;
            }
            for (var g = 0; g < _groups.Length; g++)
                if (_pending[g] is null) Start(g);
            WaitAll();
            foreach (var b in _buckets) Unpack(b, SetGrad);
        }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            try { WaitAll(); } // no all-reduce may still write a buffer that is freed here
            catch (CollectiveException) { }
        }
        foreach (var b in _buckets) b.Flat.Dispose();
    }

    private void Start(int group)
    {
        using var _ = torch.no_grad();
        _pending[group] = _groups[group].Select(b =>
        {
            Pack(b, p => p.grad);
            return _comm.AllReduceAsync(b.Flat, ReduceOp.Average);
        }).ToArray();
    }

    // Waits every started all-reduce (also after a failure, so none is left running) and ends the round; throws the first failure.
    private void WaitAll()
    {
        CollectiveException? first = null;
        foreach (var pending in _pending.Where(p => p is not null).SelectMany(p => p!))
        {
            try { pending.Wait(); }
            catch (CollectiveException e) { first ??= e; }
        }
        Array.Clear(_pending);
        if (first is not null) throw first;
    }

    private static void SetGrad(Tensor p, Tensor slice)
    {
        var g = p.grad;
        if (g is null) p.grad = slice.clone();
        else g.copy_(slice);
    }

    // One flat buffer [sum of numels] of one dtype, and where each parameter lives in it.
    private sealed record Bucket(Tensor Flat, (Tensor Parameter, long Offset)[] Members);

    private static Bucket[] Plan(IReadOnlyList<Tensor> parameters, long bucketBytes)
    {
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
        return new Bucket(torch.empty(offset, members[0].dtype, device: members[0].device), placed); // beside the parameters: NCCL reduces GPU memory
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
