// An in-memory ITokenSource for plan tests: token values encode (source, position) so tests can check where reads came from.
namespace Data.UnitTests;

internal sealed class ArraySource(string name, int[] tokens) : ITokenSource
{
    public string Name => name;

    public long TokenCount => tokens.Length;

    /// <summary>A source whose token at position p is tag * 1_000_000 + p.</summary>
    public static ArraySource Tagged(int tag, int count) =>
        new($"source{tag}", [.. Enumerable.Range(0, count).Select(p => (tag * 1_000_000) + p)]);

    public void Read(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > tokens.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(start), $"{name}: start {start} length {destination.Length}");
        }

        tokens.AsSpan((int)start, destination.Length).CopyTo(destination);
    }
}
