// A contiguous range of another token source (the synthetic corpus's train and validation splits).
using Data;

namespace Rank.Training;

public sealed class TokenSlice(ITokenSource source, long start, long count, string name) : ITokenSource
{
    public string Name { get; } = name;
    public long TokenCount { get; } = start >= 0 && count > 0 && start + count <= source.TokenCount ? count
        : throw new ArgumentOutOfRangeException(nameof(count), $"{name}: [{start}, {start + count}) is outside {source.Name} ({source.TokenCount} tokens)");

    public void Read(long offset, Span<int> destination)
    {
        if (offset < 0 || offset + destination.Length > TokenCount)
            throw new ArgumentOutOfRangeException(nameof(offset), $"{Name}: [{offset}, {offset + destination.Length}) is outside [0, {TokenCount})");
        source.Read(start + offset, destination);
    }
}
