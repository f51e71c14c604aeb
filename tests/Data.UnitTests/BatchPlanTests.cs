// Tests for BatchPlan: determinism, one visit per sequence per epoch, batches across epoch boundaries, and Fill.
namespace Data.UnitTests;

public sealed class BatchPlanTests
{
    private static readonly SequencePlan Plan = new([ArraySource.Tagged(0, 100), ArraySource.Tagged(1, 90)], 5);

    [Fact]
    public void The_same_arguments_give_the_same_batches_in_any_query_order()
    {
        var forward = new BatchPlan(Plan, 4, 11);
        var backward = new BatchPlan(Plan, 4, 11);

        long[][] a = [.. Enumerable.Range(0, 30).Select(s => forward.GlobalBatch(s))];
        long[][] b = [.. Enumerable.Range(0, 30).Reverse().Select(s => backward.GlobalBatch(s)).Reverse()];

        Assert.Equal(a, b);
    }

    [Fact]
    public void A_different_seed_gives_a_different_order()
    {
        long[] a = new BatchPlan(Plan, 8, 1).GlobalBatch(0);
        long[] b = new BatchPlan(Plan, 8, 2).GlobalBatch(0);

        Assert.NotEqual(a, b);
    }

    [Fact]
    public void Each_epoch_visits_every_sequence_exactly_once_in_a_new_order()
    {
        long n = Plan.Count;
        var batches = new BatchPlan(Plan, 7, 3);
        long steps = (3 * n / 7) + 1;
        long[] stream = [.. Enumerable.Range(0, (int)steps).SelectMany(s => batches.GlobalBatch(s))];

        long[][] epochs = [.. Enumerable.Range(0, 3).Select(e => stream[(int)(e * n)..(int)((e + 1) * n)])];

        Assert.All(epochs, epoch => Assert.Equal(Enumerable.Range(0, (int)n).Select(i => (long)i), epoch.Order()));
        Assert.NotEqual(epochs[0], epochs[1]);
        Assert.NotEqual(epochs[1], epochs[2]);
    }

    [Fact]
    public void A_batch_straddling_an_epoch_boundary_takes_the_tail_of_one_epoch_then_the_head_of_the_next()
    {
        long n = Plan.Count;
        var batches = new BatchPlan(Plan, 5, 9);
        var positions = new BatchPlan(Plan, 1, 9);
        long step = n / 5;
        (long epoch, long position) = batches.CursorAt(step);
        Assert.Equal(0, epoch);
        Assert.True(position + 5 > n, "the chosen step must straddle the boundary");

        long[] batch = batches.GlobalBatch(step);

        long[] expected = [.. Enumerable.Range(0, 5).Select(i => positions.GlobalBatch((step * 5) + i)[0])];
        Assert.Equal(expected, batch);
        Assert.Equal((1L, 0L), positions.CursorAt(n));
    }

    [Fact]
    public void CursorAt_is_the_epoch_and_position_of_the_steps_first_sequence()
    {
        long n = Plan.Count;
        var batches = new BatchPlan(Plan, 6, 0);

        foreach (long step in new long[] { 0, 1, 5, 100, 12345 })
        {
            Assert.Equal((step * 6 / n, step * 6 % n), batches.CursorAt(step));
        }
    }

    [Fact]
    public void Fill_writes_the_global_batch_row_major()
    {
        var batches = new BatchPlan(Plan, 3, 4);
        int t = Plan.SequenceLength;
        var inputs = new int[3 * t];
        var targets = new int[3 * t];

        batches.Fill(17, inputs, targets);

        long[] batch = batches.GlobalBatch(17);
        var rowInputs = new int[t];
        var rowTargets = new int[t];
        for (int row = 0; row < 3; row++)
        {
            Plan.Fill(batch[row], rowInputs, rowTargets);
            Assert.Equal(rowInputs, inputs[(row * t)..((row + 1) * t)]);
            Assert.Equal(rowTargets, targets[(row * t)..((row + 1) * t)]);
        }
    }

    [Fact]
    public void Fill_rejects_buffers_of_the_wrong_size_naming_the_shape()
    {
        var batches = new BatchPlan(Plan, 3, 4);

        var error = Assert.Throws<ArgumentException>(() => batches.Fill(0, new int[14], new int[15]));

        Assert.Contains("inputs length 14", error.Message);
        Assert.Contains("batchSize 3 x sequenceLength 5 = 15", error.Message);
    }

    [Fact]
    public void A_negative_step_and_a_non_positive_batch_size_are_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new BatchPlan(Plan, 2, 0).GlobalBatch(-1));
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new BatchPlan(Plan, 0, 0));
        Assert.Contains("batchSize 0", error.Message);
    }
}
