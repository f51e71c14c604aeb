// Which chunk each rank sends and receives at each step of a ring algorithm, and how chunks split into pipelined segments.
namespace Collectives;

/// <summary>A contiguous range of elements of the flat tensor: [Start, Start + Count).</summary>
internal readonly record struct Chunk(long Start, long Count);

/// <summary>One step: send chunk Send to the next rank (-1: none) while receiving chunk Recv from the previous rank
/// (-1: none), either reducing it into the tensor or overwriting. A send of the chunk received in the step before
/// waits segment by segment for that receive, which pipelines the steps.</summary>
internal readonly record struct RingStep(int Send, int Recv, bool Reduce);

internal static class RingPlan
{
    private static int Mod(int a, int n) => ((a % n) + n) % n;

    /// <summary>n chunks whose lengths differ by at most one element (total need not divide by n; chunks may be empty).</summary>
    public static Chunk[] Balanced(long total, int n) =>
        Enumerable.Range(0, n).Select(i => new Chunk(total * i / n, total * (i + 1) / n - total * i / n)).ToArray();

    /// <summary>n chunks of exactly <paramref name="each"/> elements.</summary>
    public static Chunk[] Equal(long each, int n) =>
        Enumerable.Range(0, n).Select(i => new Chunk(each * i, each)).ToArray();

    /// <summary>One chunk of everything (broadcast).</summary>
    public static Chunk[] Whole(long total) => [new Chunk(0, total)];

    /// <summary>Reduce-scatter after which rank r holds the reduced chunk r: n-1 steps.</summary>
    public static IEnumerable<RingStep> ReduceScatter(int r, int n) =>
        Enumerable.Range(0, n - 1).Select(s => new RingStep(Mod(r - s - 1, n), Mod(r - s - 2, n), true));

    /// <summary>All-gather starting from rank r holding chunk r: n-1 steps.</summary>
    public static IEnumerable<RingStep> AllGather(int r, int n) =>
        Enumerable.Range(0, n - 1).Select(s => new RingStep(Mod(r - s, n), Mod(r - s - 1, n), false));

    /// <summary>All-reduce = reduce-scatter (rank r ends holding chunk r+1) then all-gather: 2(n-1) steps, each moving
    /// 1/n of the tensor, so each rank sends 2(n-1)/n of the bytes whatever n is.</summary>
    public static RingStep[] AllReduce(int r, int n) =>
        ReduceScatter(r + 1, n).Concat(AllGather(r + 1, n)).ToArray();

    /// <summary>Chain from root around the ring: receive (unless root), then forward (unless last before root).</summary>
    public static RingStep[] Broadcast(int r, int root, int n)
    {
        var position = Mod(r - root, n);
        return [new RingStep(-1, position > 0 ? 0 : -1, false), new RingStep(position < n - 1 ? 0 : -1, -1, false)];
    }

    /// <summary>Segments of a chunk: ceil(count / segmentElements).</summary>
    public static long Segments(Chunk c, long segmentElements) => (c.Count + segmentElements - 1) / segmentElements;
}
