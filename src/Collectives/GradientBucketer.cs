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
    private readonly ICommunicator comm;
    private readonly Bucket[][] groups;               // [group][bucket of that group]
    private readonly Bucket[] buckets;                // all, group by group: the order of every all-reduce
    private readonly IPendingCollective[]?[] pending; // [group]: its started all-reduces this round; null = not started
    private readonly object gate = new();             // Ready runs on the autograd thread

    /// <summary>All parameters as one group: no overlap unless Ready(0) is called.</summary>
    public GradientBucketer(ICommunicator comm, IReadOnlyList<Tensor> parameters, long bucketBytes = 25 * 1024 * 1024)
        : this(comm, [parameters], bucketBytes) { }

    /// <summary><paramref name="groups"/> in the order their gradients become final in the backward pass (the last
    /// block first); <see cref="Ready"/> starts one group's all-reduces.</summary>
    public GradientBucketer(ICommunicator comm, IReadOnlyList<IReadOnlyList<Tensor>> groups, long bucketBytes = 25 * 1024 * 1024)
    {
        if (bucketBytes < 1) throw new ArgumentOutOfRangeException(nameof(bucketBytes), $"bucketBytes {bucketBytes} < 1");
        this.comm = comm;
        this.groups = groups.Select(g => Plan(g, bucketBytes)).ToArray();
        this.buckets = this.groups.SelectMany(g => g).ToArray();
        pending = new IPendingCollective[]?[this.groups.Length];
    }

    /// <summary>Number of buckets (each is one all-reduce per AverageGradients).</summary>
    public int BucketCount => buckets.Length;

    public int GroupCount => groups.Length;

    /// <summary>Overwrites every parameter with root's values, so all replicas start identical.</summary>
    public void BroadcastParameters(int root = 0)
    {
        using var _ = torch.no_grad();
        lock (gate)
            if (pending.Any(p => p is not null))
                throw new InvalidOperationException("BroadcastParameters during a round of Ready: call AverageGradients first");
        foreach (var b in buckets)
        {
            Pack(b, p => p);
            comm.Broadcast(b.Flat, root);
            Unpack(b, (p, slice) => p.copy_(slice));
        }
    }

    /// <summary>The gradients of <paramref name="group"/> are final: packs them and starts their all-reduces
    /// (Average). Called during backward, at most once per group and round; any group order, the same on all ranks.</summary>
    public void Ready(int group)
    {
        if (group < 0 || group >= groups.Length)
            throw new ArgumentOutOfRangeException(nameof(group), $"group {group} outside [0, {groups.Length})");
        lock (gate)
        {
            if (pending[group] is not null)
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
        lock (gate)
        {
            if (pending.All(p => p is null))
            {
                foreach (var b in buckets)
                {
                    Pack(b, p => p.grad);
                    comm.AllReduce(b.Flat, ReduceOp.Average);
                    Unpack(b, SetGrad);
                }
                return;
            }
            for (var g = 0; g < groups.Length; g++)
                if (pending[g] is null) Start(g);
            WaitAll();
            foreach (var b in buckets) Unpack(b, SetGrad);
        }
    }

    public void Dispose()
    {
        lock (gate)
        {
            try { WaitAll(); } // no all-reduce may still write a buffer that is freed here
            catch (CollectiveException) { }
        }
        foreach (var b in buckets) b.Flat.Dispose();
    }

    private void Start(int group)
    {
        using var _ = torch.no_grad();
        pending[group] = groups[group].Select(b =>
        {
            Pack(b, p => p.grad);
            return comm.AllReduceAsync(b.Flat, ReduceOp.Average);
        }).ToArray();
    }

    // Waits every started all-reduce (also after a failure, so none is left running) and ends the round; throws the first failure.
    private void WaitAll()
    {
        CollectiveException? first = null;
        foreach (var pending in pending.Where(p => p is not null).SelectMany(p => p!))
        {
            try { pending.Wait(); }
            catch (CollectiveException e) { first ??= e; }
        }
        Array.Clear(pending);
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
