// The built-in synthetic corpus: a seeded Zipf-Markov token stream whose entropy rate is known exactly.
namespace Data;

/// <summary>
/// A deterministic corpus so a training run needs no data, with learnable structure and a known best loss.
/// Process: x[0] ~ Zipf(V). Each later token is, with probability 1/256, a reset drawn from Zipf(V); otherwise
/// succ[x[n-1]][j] with j ~ Zipf(K). succ[t] is a seeded list of K = min(32, V) distinct tokens drawn from Zipf(V),
/// so frequent tokens are frequent successors and unigram frequencies stay Zipf-like.
/// Zipf(n): rank r in [0, n) has probability proportional to (r + 1)^-1.1, and rank r is token id r.
/// All tokens are generated at construction into a ushort[] (2 bytes per token).
/// </summary>
public sealed class SyntheticCorpus : ITokenSource
{
    /// <summary>Exponent s of every Zipf distribution in the process.</summary>
    public const double ZipfExponent = 1.1;

    /// <summary>Successor list length K before capping at the vocabulary size.</summary>
    public const int MaxSuccessors = 32;

    /// <summary>A token is a reset with probability 1 / ResetPeriod.</summary>
    public const int ResetPeriod = 256;

    private const ulong Domain = 0x5EC0_2B05;
    private const double StationaryTolerance = 1e-13;

    private readonly ushort[] tokens;
    private readonly ushort[] successors;
    private readonly double[] vocabularyZipf;
    private readonly double[] successorZipf;
    private readonly Lazy<double> entropyRate;

    /// <param name="vocabSize">Token ids are in [0, vocabSize); 2 to 65536.</param>
    /// <param name="tokenCount">Corpus length in tokens; 2 to Array.MaxLength.</param>
    /// <param name="seed">Same seed, same corpus, on every platform.</param>
    public SyntheticCorpus(int vocabSize, long tokenCount, ulong seed)
    {
        if (vocabSize < 2 || vocabSize > 65536)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabSize), $"SyntheticCorpus: vocabSize {vocabSize} must be in [2, 65536]");
        }

        if (tokenCount < 2 || tokenCount > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(tokenCount), $"SyntheticCorpus: tokenCount {tokenCount} must be in [2, {Array.MaxLength}]");
        }

        VocabSize = vocabSize;
        SuccessorCount = Math.Min(MaxSuccessors, vocabSize);
        Seed = seed;
        vocabularyZipf = Zipf(vocabSize);
        successorZipf = Zipf(SuccessorCount);
        var vocabulary = new AliasTable(vocabularyZipf);
        successors = BuildSuccessors(vocabulary);
        tokens = Generate(vocabulary, (int)tokenCount);
        entropyRate = new Lazy<double>(ComputeEntropyRate);
    }

    /// <summary>Token ids are in [0, VocabSize).</summary>
    public int VocabSize { get; }

    /// <summary>K: the length of each token's successor list.</summary>
    public int SuccessorCount { get; }

    /// <summary>The construction seed.</summary>
    public ulong Seed { get; }

    /// <inheritdoc/>
    public string Name => $"synthetic(vocab={VocabSize}, tokens={TokenCount}, seed={Seed})";

    /// <inheritdoc/>
    public long TokenCount => tokens.LongLength;

    /// <summary>
    /// The entropy rate of the stationary process in nats per token: sum over t of pi(t) H(x[n] | x[n-1] = t), where the
    /// conditional law mixes the reset (1/256, Zipf(V)) with the successor choice (255/256, Zipf(K)) and pi is the
    /// stationary distribution (power iteration). The process is first-order Markov, so no longer context does better:
    /// this is the lowest achievable mean cross-entropy for tokens that have a predecessor in the context.
    /// Computed on first use (O(V K) per iteration; well under a second for V = 50257).
    /// </summary>
    public double EntropyRateNats => entropyRate.Value;

    /// <inheritdoc/>
    public void Read(long start, Span<int> destination)
    {
        TokenRange.Check(Name, TokenCount, start, destination.Length);
        TokenRange.Widen(tokens.AsSpan((int)start, destination.Length), destination);
    }

    /// <summary>Normalised Zipf probabilities over ranks [0, n).</summary>
    private static double[] Zipf(int n)
    {
        var p = new double[n];
        double sum = 0;
        for (int r = 0; r < n; r++)
        {
            p[r] = Math.Pow(r + 1, -ZipfExponent);
            sum += p[r];
        }

        for (int r = 0; r < n; r++)
        {
            p[r] /= sum;
        }

        return p;
    }

    /// <summary>[V, K] row-major; row t comes from its own PRNG stream so rows do not depend on each other.</summary>
    private ushort[] BuildSuccessors(AliasTable vocabulary)
    {
        int k = SuccessorCount;
        var table = new ushort[VocabSize * k];
        for (int t = 0; t < VocabSize; t++)
        {
            var rng = SplitMix64.Derive(Seed, Domain, (ulong)t + 1);
            Span<ushort> row = table.AsSpan(t * k, k);
            if (k == VocabSize)
            {
                Shuffle(row, ref rng);
            }
            else
            {
                DrawDistinct(row, vocabulary, ref rng);
            }
        }

        return table;
    }

    /// <summary>A uniformly random permutation of all token ids (used when K equals V).</summary>
    private static void Shuffle(Span<ushort> row, ref SplitMix64 rng)
    {
        for (int i = 0; i < row.Length; i++)
        {
            row[i] = (ushort)i;
        }

        for (int i = row.Length - 1; i > 0; i--)
        {
            int j = (int)rng.NextBelow((ulong)i + 1);
            (row[i], row[j]) = (row[j], row[i]);
        }
    }

    /// <summary>Zipf(V) draws with duplicates rejected; K &lt; V, so this terminates quickly.</summary>
    private static void DrawDistinct(Span<ushort> row, AliasTable vocabulary, ref SplitMix64 rng)
    {
        int filled = 0;
        while (filled < row.Length)
        {
            var candidate = (ushort)vocabulary.Sample(ref rng);
            if (!row[..filled].Contains(candidate))
            {
                row[filled++] = candidate;
            }
        }
    }

    private ushort[] Generate(AliasTable vocabulary, int count)
    {
        var successor = new AliasTable(successorZipf);
        var rng = SplitMix64.Derive(Seed, Domain, 0);
        int k = SuccessorCount;
        var tokens = new ushort[count];
        tokens[0] = (ushort)vocabulary.Sample(ref rng);
        for (int i = 1; i < count; i++)
        {
            bool reset = rng.NextBelow(ResetPeriod) == 0;
            tokens[i] = reset
                ? (ushort)vocabulary.Sample(ref rng)
                : successors[(tokens[i - 1] * k) + successor.Sample(ref rng)];
        }

        return tokens;
    }

    private double ComputeEntropyRate()
    {
        double[] stationary = StationaryDistribution();
        double resetEntropy = 0;
        foreach (double z in vocabularyZipf)
        {
            resetEntropy -= Plogp(z / ResetPeriod);
        }

        double rate = 0;
        for (int t = 0; t < VocabSize; t++)
        {
            rate += stationary[t] * ConditionalEntropy(t, resetEntropy);
        }

        return rate;
    }

    /// <summary>
    /// H(x[n] | x[n-1] = t) in nats. Outside succ[t] the law is the reset term z(x)/256, whose entropy over the whole
    /// vocabulary is resetEntropy; for the K successors that term is swapped for z(x)/256 + (255/256) w(j).
    /// </summary>
    private double ConditionalEntropy(int t, double resetEntropy)
    {
        const double Reset = 1.0 / ResetPeriod;
        double h = resetEntropy;
        ReadOnlySpan<ushort> row = successors.AsSpan(t * SuccessorCount, SuccessorCount);
        for (int j = 0; j < row.Length; j++)
        {
            double resetMass = Reset * vocabularyZipf[row[j]];
            h += Plogp(resetMass) - Plogp(resetMass + ((1 - Reset) * successorZipf[j]));
        }

        return h;
    }

    private static double Plogp(double p) => p > 0 ? p * Math.Log(p) : 0;

    /// <summary>
    /// pi = z/256 + (255/256) S^T pi by power iteration from z (iterate n is the exact marginal of x[n]); the reset makes
    /// the map a contraction of at least 255/256 in L1, and in practice it converges in tens of iterations.
    /// </summary>
    private double[] StationaryDistribution()
    {
        const double Reset = 1.0 / ResetPeriod;
        int k = SuccessorCount;
        double[] current = (double[])vocabularyZipf.Clone();
        var next = new double[VocabSize];
        for (int iteration = 0; iteration < 100_000; iteration++)
        {
            for (int x = 0; x < VocabSize; x++)
            {
                next[x] = Reset * vocabularyZipf[x];
            }

            for (int t = 0; t < VocabSize; t++)
            {
                double mass = (1 - Reset) * current[t];
                for (int j = 0; j < k; j++)
                {
                    next[successors[(t * k) + j]] += mass * successorZipf[j];
                }
            }

            double change = 0;
            for (int x = 0; x < VocabSize; x++)
            {
                change += Math.Abs(next[x] - current[x]);
            }

            (current, next) = (next, current);
            if (change < StationaryTolerance)
            {
                break;
            }
        }

        return current;
    }
}
