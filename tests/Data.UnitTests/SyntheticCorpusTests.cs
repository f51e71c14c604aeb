// Tests for SyntheticCorpus: determinism, token range, Zipf shape, and the exact entropy rate against an estimate.
namespace Data.UnitTests;

public sealed class SyntheticCorpusTests
{
    [Fact]
    public void The_same_seed_gives_the_same_tokens()
    {
        int[] first = ReadAll(new SyntheticCorpus(1000, 20_000, 7));
        int[] second = ReadAll(new SyntheticCorpus(1000, 20_000, 7));

        Assert.Equal(first, second);
    }

    [Fact]
    public void A_different_seed_gives_different_tokens()
    {
        int[] first = ReadAll(new SyntheticCorpus(1000, 20_000, 7));
        int[] second = ReadAll(new SyntheticCorpus(1000, 20_000, 8));

        int same = first.Zip(second).Count(pair => pair.First == pair.Second);
        Assert.True(same < first.Length / 4, $"{same} of {first.Length} positions agree");
    }

    [Theory]
    [InlineData(2)]
    [InlineData(32)]
    [InlineData(33)]
    [InlineData(50257)]
    [InlineData(65536)]
    public void Every_token_is_below_the_vocabulary_size(int vocabSize)
    {
        var corpus = new SyntheticCorpus(vocabSize, 100_000, 1);

        int[] tokens = ReadAll(corpus);

        Assert.All(tokens, t => Assert.InRange(t, 0, vocabSize - 1));
        Assert.Equal(Math.Min(32, vocabSize), corpus.SuccessorCount);
        Assert.InRange(corpus.EntropyRateNats, 0, Math.Log(vocabSize));
    }

    [Fact]
    public void The_empirical_conditional_entropy_of_a_million_tokens_matches_the_entropy_rate()
    {
        const int Vocab = 256;
        var corpus = new SyntheticCorpus(Vocab, 1_000_000, 42);
        int[] tokens = ReadAll(corpus);

        double estimate = ConditionalEntropyEstimate(tokens, Vocab);

        // Sampling noise of the mean log-loss over 1M tokens is about 0.002 nats.
        Assert.InRange(estimate, corpus.EntropyRateNats - 0.01, corpus.EntropyRateNats + 0.01);
        Assert.True(corpus.EntropyRateNats < Math.Log(Vocab) - 1.5, $"rate {corpus.EntropyRateNats} vs ln V {Math.Log(Vocab)}");
    }

    [Fact]
    public void At_GPT2_vocabulary_size_the_entropy_rate_is_far_below_uniform()
    {
        var corpus = new SyntheticCorpus(50257, 1000, 3);

        double rate = corpus.EntropyRateNats;

        Assert.InRange(rate, 2.0, 5.0);
        Assert.True(rate < Math.Log(50257) - 5, $"rate {rate} vs ln V {Math.Log(50257)}");
    }

    [Fact]
    public void Unigram_frequencies_fall_with_token_rank_like_Zipf()
    {
        int[] counts = new int[50257];
        foreach (int t in ReadAll(new SyntheticCorpus(50257, 1_000_000, 5)))
        {
            counts[t]++;
        }

        double head = counts[..10].Average();
        double middle = counts[100..200].Average();
        double tail = counts[10_000..20_000].Average();
        Assert.True(head > 10 * middle && middle > 10 * tail, $"head {head}, middle {middle}, tail {tail}");
    }

    [Fact]
    public void Read_copies_the_requested_range_and_rejects_reads_past_the_end()
    {
        var corpus = new SyntheticCorpus(100, 1000, 9);
        int[] all = ReadAll(corpus);
        var part = new int[10];

        corpus.Read(990, part);
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => corpus.Read(991, part));

        Assert.Equal(all[990..], part);
        Assert.Contains(corpus.Name, error.Message);
        Assert.Contains("10 tokens at start 991", error.Message);
    }

    [Theory]
    [InlineData(1, 100, "vocabSize 1")]
    [InlineData(65537, 100, "vocabSize 65537")]
    [InlineData(100, 1, "tokenCount 1")]
    public void Invalid_arguments_are_named_with_their_value(int vocabSize, long tokenCount, string expected)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new SyntheticCorpus(vocabSize, tokenCount, 0));

        Assert.Contains(expected, error.Message);
    }

    private static int[] ReadAll(ITokenSource source)
    {
        var tokens = new int[source.TokenCount];
        source.Read(0, tokens);
        return tokens;
    }

    /// <summary>
    /// H(next | previous) in nats from pair counts, plug-in plus the Miller-Madow correction (outcomes seen - 1) / 2N
    /// per context, which removes the plug-in estimate's low bias (about 0.005 nats here).
    /// </summary>
    private static double ConditionalEntropyEstimate(int[] tokens, int vocab)
    {
        var pairs = new long[vocab * vocab];
        var previous = new long[vocab];
        for (int i = 1; i < tokens.Length; i++)
        {
            pairs[(tokens[i - 1] * vocab) + tokens[i]]++;
            previous[tokens[i - 1]]++;
        }

        double n = tokens.Length - 1;
        double h = (pairs.Count(c => c > 0) - previous.Count(c => c > 0)) / (2 * n);
        for (int i = 0; i < pairs.Length; i++)
        {
            if (pairs[i] > 0)
            {
                h -= pairs[i] / n * Math.Log((double)pairs[i] / previous[i / vocab]);
            }
        }

        return h;
    }
}
