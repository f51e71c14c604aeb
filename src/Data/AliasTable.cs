// O(1) sampling from a fixed discrete distribution (Vose's alias method).
namespace Data;

/// <summary>Samples index i with probability weights[i] / sum(weights), exactly up to double rounding.</summary>
internal sealed class AliasTable
{
    private readonly double[] _keep;
    private readonly int[] _alias;

    public AliasTable(ReadOnlySpan<double> weights)
    {
        int n = weights.Length;
        _keep = new double[n];
        _alias = new int[n];
        double sum = 0;
        foreach (double w in weights)
        {
            sum += w;
        }

        var small = new Stack<int>();
        var large = new Stack<int>();
        for (int i = 0; i < n; i++)
        {
            _keep[i] = weights[i] * n / sum;
            (_keep[i] < 1 ? small : large).Push(i);
        }

        Pair(small, large);
    }

    public int Sample(ref SplitMix64 rng)
    {
        int i = (int)rng.NextBelow((ulong)_keep.Length);
        return rng.NextDouble() < _keep[i] ? i : _alias[i];
    }

    /// <summary>Fills each under-full column with mass from an over-full one; leftovers are full up to rounding.</summary>
    private void Pair(Stack<int> small, Stack<int> large)
    {
        while (small.Count > 0 && large.Count > 0)
        {
            int under = small.Pop();
            int over = large.Pop();
            _alias[under] = over;
            _keep[over] -= 1 - _keep[under];
            (_keep[over] < 1 ? small : large).Push(over);
        }

        foreach (int i in small.Concat(large))
        {
            _keep[i] = 1;
            _alias[i] = i;
        }
    }
}
