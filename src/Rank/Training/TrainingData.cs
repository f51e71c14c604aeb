// The run's token data as sequences: the training and validation cuts of the synthetic corpus or of token shards.
using Data;

namespace Rank.Training;

/// <summary>Opened the same way by the coordinator (which assigns training sequences) and by every rank (which
/// reads them); SequencePlan.Fingerprint checks that both see the same cut.</summary>
public sealed class TrainingData : IDisposable
{
    readonly List<IDisposable> owned = new();

    public SequencePlan Train { get; }
    public SequencePlan Validation { get; }
    /// <summary>The corpus when data.source = synthetic, for its entropy rate; else null.</summary>
    public SyntheticCorpus? Corpus { get; }
    /// <summary>data.source = shards: how many files were read as each layout, e.g. "4 read as llmc (data/a_train_000000.bin, ...)"; else null.</summary>
    public string? Formats { get; }

    public TrainingData(DataOptions data, int sequenceLength)
    {
        int vocab = data.ResolvedVocabSize;
        if (data.Source == "shards")
        {
            var train = TokenShard.OpenShards(data.TrainShards!, vocab, data.ShardFormat);
            owned.AddRange(train);
            var val = TokenShard.OpenShards(data.ValShards!, vocab, data.ShardFormat);
            owned.AddRange(val);
            Formats = string.Join(", ", train.Concat(val).GroupBy(s => s.Format).Select(g => $"{g.Count()} read as {Name(g.Key)} ({g.First().Path}{(g.Count() > 1 ? ", ..." : "")})"));
            Train = new SequencePlan(train.Cast<ITokenSource>().ToList(), sequenceLength);
            Validation = new SequencePlan(val.Cast<ITokenSource>().ToList(), sequenceLength);
            return;
        }
        Corpus = new SyntheticCorpus(vocab, data.SyntheticTokens, data.SyntheticSeed);
        long valTokens = Math.Max(sequenceLength + 1, (long)(data.SyntheticTokens * data.ValFraction));
        Train = new SequencePlan([new TokenSlice(Corpus, 0, Corpus.TokenCount - valTokens, "synthetic/train")], sequenceLength);
        Validation = new SequencePlan([new TokenSlice(Corpus, Corpus.TokenCount - valTokens, valTokens, "synthetic/val")], sequenceLength);
    }

    static string Name(ShardFormat format) => format == ShardFormat.LlmC ? "llmc" : "raw";

    public void Dispose()
    {
        foreach (var o in owned) o.Dispose();
    }
}
