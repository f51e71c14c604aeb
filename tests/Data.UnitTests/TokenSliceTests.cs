// TokenSlice: a window onto another source, bounds-checked on both sides.
namespace Data.UnitTests;

public class TokenSliceTests
{
    [Fact]
    public void A_slice_reads_the_tokens_of_its_window_of_the_source()
    {
        var slice = new TokenSlice(ArraySource.Tagged(1, 100), 40, 20, "window");
        var tokens = new int[5];

        slice.Read(15, tokens);

        Assert.Equal(20, slice.TokenCount);
        Assert.Equal([1_000_055, 1_000_056, 1_000_057, 1_000_058, 1_000_059], tokens);
    }

    [Fact]
    public void A_read_past_the_end_of_the_slice_fails_naming_the_slice_even_where_the_source_goes_on()
    {
        var slice = new TokenSlice(ArraySource.Tagged(1, 100), 40, 20, "window");

        var e = Assert.Throws<ArgumentOutOfRangeException>(() => slice.Read(18, new int[5]));

        Assert.Contains("window", e.Message);
    }

    [Theory]
    [InlineData(-1, 10)]
    [InlineData(95, 10)]
    [InlineData(10, 0)]
    public void A_window_outside_the_source_or_empty_is_refused_naming_it(long start, long count)
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TokenSlice(ArraySource.Tagged(1, 100), start, count, "window"));

        Assert.Contains("window", e.Message);
        Assert.Contains("source1", e.Message);
    }
}
