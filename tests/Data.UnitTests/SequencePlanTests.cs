// Tests for SequencePlan: counts per source, boundaries never crossed, shifted targets, and its errors.
namespace Data.UnitTests;

public sealed class SequencePlanTests
{
    [Fact]
    public void Each_source_holds_floor_of_tokens_minus_one_over_length_sequences()
    {
        ITokenSource[] sources = [ArraySource.Tagged(0, 9), ArraySource.Tagged(1, 8), ArraySource.Tagged(2, 3), ArraySource.Tagged(3, 17)];

        var plan = new SequencePlan(sources, 4);

        Assert.Equal(2 + 1 + 0 + 4, plan.Count);
        Assert.Equal((0, 0L), plan[0]);
        Assert.Equal((0, 4L), plan[1]);
        Assert.Equal((1, 0L), plan[2]);
        Assert.Equal((3, 0L), plan[3]);
        Assert.Equal((3, 12L), plan[6]);
    }

    [Fact]
    public void Every_sequence_comes_from_one_source_with_targets_shifted_by_one()
    {
        ITokenSource[] sources = [ArraySource.Tagged(1, 50), ArraySource.Tagged(2, 5), ArraySource.Tagged(3, 33)];
        var plan = new SequencePlan(sources, 6);
        var inputs = new int[6];
        var targets = new int[6];

        for (long i = 0; i < plan.Count; i++)
        {
            plan.Fill(i, inputs, targets);
            (int source, long start) = plan[i];
            int tag = source + 1;
            Assert.Equal(Enumerable.Range((int)start, 6).Select(p => (tag * 1_000_000) + p), inputs);
            Assert.Equal(Enumerable.Range((int)start + 1, 6).Select(p => (tag * 1_000_000) + p), targets);
            Assert.True(start + 7 <= sources[source].TokenCount);
        }
    }

    [Fact]
    public void Every_token_but_the_first_of_a_source_is_a_target_exactly_once()
    {
        var plan = new SequencePlan([ArraySource.Tagged(0, 25)], 8);
        var inputs = new int[8];
        var targets = new int[8];
        var seen = new List<int>();

        for (long i = 0; i < plan.Count; i++)
        {
            plan.Fill(i, inputs, targets);
            seen.AddRange(targets);
        }

        Assert.Equal(Enumerable.Range(1, 24), seen);
    }

    [Fact]
    public void Sources_too_short_for_one_sequence_fail_with_their_counts_and_the_length()
    {
        ITokenSource[] sources = [ArraySource.Tagged(0, 10), ArraySource.Tagged(1, 64)];

        var error = Assert.Throws<ArgumentException>(() => new SequencePlan(sources, 64));

        Assert.Contains("source0: 10", error.Message);
        Assert.Contains("source1: 64", error.Message);
        Assert.Contains("sequenceLength 64", error.Message);
    }

    [Fact]
    public void Indices_outside_the_plan_and_wrong_span_lengths_are_rejected()
    {
        var plan = new SequencePlan([ArraySource.Tagged(0, 10)], 3);

        Assert.Throws<ArgumentOutOfRangeException>(() => plan[3]);
        Assert.Throws<ArgumentOutOfRangeException>(() => plan[-1]);
        var error = Assert.Throws<ArgumentException>(() => plan.Fill(0, new int[3], new int[2]));
        Assert.Contains("targets length 2", error.Message);
    }

    [Fact]
    public void A_non_positive_sequence_length_is_rejected()
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new SequencePlan([ArraySource.Tagged(0, 10)], 0));

        Assert.Contains("sequenceLength 0", error.Message);
    }
}
