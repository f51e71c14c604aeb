// The options of Prepare.Run: which text files to tokenise and where and how to shard them.
namespace Data;

/// <summary>What Prepare.Run reads and writes.</summary>
/// <param name="Inputs">UTF-8 text files; documents are separated by one or more blank lines.</param>
/// <param name="OutputDirectory">Where shards go; created if missing.</param>
/// <param name="Name">Shard name prefix: {Name}_train_{k:D6}.bin and {Name}_val_{k:D6}.bin.</param>
/// <param name="ValFraction">Fraction of documents for validation, in [0, 1): document i goes there when floor((i+1)f) &gt; floor(i f).</param>
/// <param name="ShardTokens">Most tokens per shard file.</param>
public sealed record PrepareOptions(
    IReadOnlyList<string> Inputs,
    string OutputDirectory,
    string Name = "data",
    double ValFraction = 0.05,
    long ShardTokens = 100_000_000);
