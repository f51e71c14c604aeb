// The project's small deterministic PRNG (SplitMix64): identical streams on every platform and .NET version.
namespace Data;

/// <summary>SplitMix64 (Steele, Lea, Flood 2014): 64-bit state, passes BigCrush, trivially seedable.</summary>
internal struct SplitMix64(ulong state)
{
    private const ulong Golden = 0x9E3779B97F4A7C15UL;
    private ulong state = state;

    /// <summary>
    /// A generator for (seed, domain, stream): domain separates users of one seed (each class has its own constant),
    /// stream numbers the independent sequences one user needs (an epoch, a table row).
    /// </summary>
    public static SplitMix64 Derive(ulong seed, ulong domain, ulong stream) => new(Mix(Mix(seed ^ Mix(domain)) ^ Mix(stream + Golden)));

    /// <summary>The SplitMix64 output function: a bijective 64-bit mixer.</summary>
    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    public ulong Next()
    {
        state += Golden;
        return Mix(state);
    }

    /// <summary>Uniform double in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Uniform integer in [0, bound), unbiased (Lemire's multiply-and-reject).</summary>
    public ulong NextBelow(ulong bound)
    {
        ulong high = Math.BigMul(Next(), bound, out ulong low);
        if (low < bound)
        {
            ulong threshold = (0 - bound) % bound;
            while (low < threshold)
            {
                high = Math.BigMul(Next(), bound, out low);
            }
        }

        return high;
    }
}
