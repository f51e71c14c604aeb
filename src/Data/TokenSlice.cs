// A contiguous range of another token source (the synthetic corpus's train and validation splits).
namespace Data;

public sealed class TokenSlice : ITokenSource
{
    readonly ITokenSource source;
    readonly long start;

    public TokenSlice(ITokenSource source, long start, long count, string name)
    {
        if (count < 1 || start < 0 || start + count > source.TokenCount)
            throw new ArgumentOutOfRangeException(nameof(count), $"{name}: [{start}, {start + count}) is not a non-empty range of {source.Name} ({source.TokenCount} tokens)");
        (this.source, this.start, Name, TokenCount) = (source, start, name, count);
    }

    public string Name { get; }
    public long TokenCount { get; }

    public void Read(long offset, Span<int> destination)
    {
        TokenRange.Check(Name, TokenCount, offset, destination.Length);
        source.Read(start + offset, destination);
    }
}
