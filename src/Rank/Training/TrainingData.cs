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

    public TrainingData(DataOptions data, int sequenceLength)
    {
        int vocab = data.ResolvedVocabSize;
        if (data.Source == "shards")
        {
            var train = TokenShard.OpenShards(data.TrainShards!, vocab);
            owned.AddRange(train);
            var val = TokenShard.OpenShards(data.ValShards!, vocab);
            owned.AddRange(val);
            Train = new SequencePlan(train.Cast<ITokenSource>().ToList(), sequenceLength);
            Validation = new SequencePlan(val.Cast<ITokenSource>().ToList(), sequenceLength);
            return;
        }
        Corpus = new SyntheticCorpus(vocab, data.SyntheticTokens, data.SyntheticSeed);
        long valTokens = Math.Max(sequenceLength + 1, (long)(data.SyntheticTokens * data.ValFraction));
        Train = new SequencePlan([new TokenSlice(Corpus, 0, Corpus.TokenCount - valTokens, "synthetic/train")], sequenceLength);
        Validation = new SequencePlan([new TokenSlice(Corpus, Corpus.TokenCount - valTokens, valTokens, "synthetic/val")], sequenceLength);
    }

    public void Dispose()
    {
        foreach (var o in owned) o.Dispose();
    }
}
