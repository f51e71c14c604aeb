// O(1) sampling from a fixed discrete distribution (Vose's alias method).
namespace Data;

/// <summary>Samples index i with probability weights[i] / sum(weights), exactly up to double rounding.</summary>
internal sealed class AliasTable
{
    private readonly double[] keep;
    private readonly int[] alias;

    public AliasTable(ReadOnlySpan<double> weights)
    {
        int n = weights.Length;
        keep = new double[n];
        alias = new int[n];
        double sum = 0;
        foreach (double w in weights)
        {
            sum += w;
        }

        var small = new Stack<int>();
        var large = new Stack<int>();
        for (int i = 0; i < n; i++)
        {
            keep[i] = weights[i] * n / sum;
            (keep[i] < 1 ? small : large).Push(i);
        }

        Pair(small, large);
    }

    public int Sample(ref SplitMix64 rng)
    {
        int i = (int)rng.NextBelow((ulong)keep.Length);
        return rng.NextDouble() < keep[i] ? i : alias[i];
    }

    /// <summary>Fills each under-full column with mass from an over-full one; leftovers are full up to rounding.</summary>
    private void Pair(Stack<int> small, Stack<int> large)
    {
        while (small.Count > 0 && large.Count > 0)
        {
            int under = small.Pop();
            int over = large.Pop();
            alias[under] = over;
            keep[over] -= 1 - keep[under];
            (keep[over] < 1 ? small : large).Push(over);
        }

        foreach (int i in small.Concat(large))
        {
            keep[i] = 1;
            alias[i] = i;
        }
    }
}
