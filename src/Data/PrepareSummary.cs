// The result of Prepare.Run: document and token counts and the shard files written.
namespace Data;

/// <summary>What Prepare.Run wrote. Token counts include the end-of-text token before every document.</summary>
public sealed record PrepareSummary(
    long Documents,
    long TrainTokens,
    long ValTokens,
    IReadOnlyList<string> TrainShards,
    IReadOnlyList<string> ValShards);
