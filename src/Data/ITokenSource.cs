// The read-only token stream contract shared by shards and the synthetic corpus.
namespace Data;

/// <summary>A finite, random-access sequence of token ids.</summary>
public interface ITokenSource
{
    /// <summary>A human-readable name for messages: a file path or a corpus description.</summary>
    string Name { get; }

    /// <summary>Number of tokens in the source.</summary>
    long TokenCount { get; }

    /// <summary>
    /// Copies tokens [start, start + destination.Length) into destination.
    /// Throws ArgumentOutOfRangeException naming the source, start and length when the range is outside [0, TokenCount).
    /// Implementations are safe to call from several threads at once.
    /// </summary>
    void Read(long start, Span<int> destination);
}
