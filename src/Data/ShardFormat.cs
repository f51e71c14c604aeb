// The on-disk token shard layouts TokenShard understands.
namespace Data;

/// <summary>How a token shard file is laid out.</summary>
public enum ShardFormat
{
    /// <summary>LlmC when the first int32 is the llm.c magic 20240520, otherwise Raw.</summary>
    Auto,

    /// <summary>llm.c / modded-nanogpt: 256 little-endian int32 header [magic, version, count, ...], then count uint16 tokens.</summary>
    LlmC,

    /// <summary>nanoGPT train.bin: a bare little-endian uint16 token array, no header.</summary>
    Raw,
}
