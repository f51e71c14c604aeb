// Options of the token data a run trains and validates on.
namespace Rank.Training;

public sealed record DataOptions
{
    /// <summary>synthetic: the built-in corpus, no files needed; shards: token shards from `prepare` or llm.c.</summary>
    public string Source { get; init; } = "synthetic";
    /// <summary>Shard pattern with * in the file name, e.g. data/brown_train_*.bin (source = shards).</summary>
    public string? TrainShards { get; init; }
    public string? ValShards { get; init; }
    /// <summary>Layout of the shard files: auto (llm.c when the magic is there, else headerless uint16; a file of llm.c size
    /// with a wrong magic is refused), llmc, or raw (nanoGPT's headerless uint16, never refused for its first bytes).</summary>
    public string Format { get; init; } = "auto";
    /// <summary>Token ids are below this. Default: 512 for the synthetic corpus, 50257 (GPT-2) for shards.</summary>
    public int? VocabSize { get; init; }
    /// <summary>Tokens of the synthetic corpus; the last val_fraction of them is the validation split.</summary>
    public long SyntheticTokens { get; init; } = 2_000_000;
    public double ValFraction { get; init; } = 0.05;
    /// <summary>Seeds the synthetic corpus (independent of train.seed, so seeds of a sweep see the same data).</summary>
    public ulong SyntheticSeed { get; init; } = 1;

    /// <summary>The layout <see cref="Format"/> names.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public Data.ShardFormat ShardFormat => Format switch { "llmc" => Data.ShardFormat.LlmC, "raw" => Data.ShardFormat.Raw, _ => Data.ShardFormat.Auto };

    public int ResolvedVocabSize => VocabSize ?? (Source == "shards" ? 50257 : 512);

    public void Validate()
    {
        if (Source != "synthetic" && Source != "shards")
            throw new ArgumentException($"data.source = '{Source}': expected synthetic or shards");
        if (Format is not ("auto" or "llmc" or "raw"))
            throw new ArgumentException($"data.format = '{Format}': expected auto, llmc or raw");
        if (Source == "shards" && string.IsNullOrWhiteSpace(TrainShards))
            throw new ArgumentException("data.train_shards = (unset): required when data.source = shards");
        if (Source == "shards" && string.IsNullOrWhiteSpace(ValShards))
            throw new ArgumentException("data.val_shards = (unset): required when data.source = shards");
        if (ResolvedVocabSize < 2 || ResolvedVocabSize > 65536)
            throw new ArgumentException($"data.vocab_size = {ResolvedVocabSize}: must be in [2, 65536] (tokens are stored as uint16)");
        if (SyntheticTokens < 1000) throw new ArgumentException($"data.synthetic_tokens = {SyntheticTokens}: must be >= 1000");
        if (!(ValFraction > 0 && ValFraction < 1)) throw new ArgumentException($"data.val_fraction = {ValFraction}: must be in (0, 1)");
    }
}
