// JobState directly: each rank's rows, put together micro-batch by micro-batch, are the global batch; bad ranges are refused.
using Grpc.Core;

namespace Coordinator.UnitTests;

public sealed class DataTests
{
    [Fact]
    public async Task The_ranks_shares_concatenated_micro_batch_by_micro_batch_are_the_global_batch()
    {
        using var job = new TestJob();
        await job.RegisterAll();
        var plan = TestJob.NewBatchPlan();

        var rank0 = job.Batches(1, 0, firstStep: 0, count: TestJob.Steps);
        var rank1 = job.Batches(1, 1, firstStep: 0, count: TestJob.Steps);

        Assert.Equal(Enumerable.Range(0, TestJob.Steps).Select(s => (long)s), rank0.Steps.Select(s => s.Step));
        Assert.Equal(Enumerable.Range(0, TestJob.Steps).Select(s => (long)s), rank1.Steps.Select(s => s.Step));
        int share = TestJob.MicroBatch / TestJob.World;
        for (int step = 0; step < TestJob.Steps; step++)
        {
            long[] a = [.. rank0.Steps[step].Sequences], b = [.. rank1.Steps[step].Sequences];
            Assert.Equal(share * TestJob.MicroBatches, a.Length);
            Assert.Equal(share * TestJob.MicroBatches, b.Length);
            var joined = Enumerable.Range(0, TestJob.MicroBatches)
                .SelectMany(m => a.Skip(m * share).Take(share).Concat(b.Skip(m * share).Take(share)));
            Assert.Equal(plan.GlobalBatch(step), joined);
        }
        Assert.NotEqual(rank0.Steps[0].Sequences, rank1.Steps[0].Sequences);
    }

    [Fact]
    public async Task A_request_past_the_last_step_is_cut_there()
    {
        using var job = new TestJob();
        await job.RegisterAll();

        var reply = job.Batches(1, 0, firstStep: TestJob.Steps - 2, count: 5);

        Assert.Equal([TestJob.Steps - 2, TestJob.Steps - 1], reply.Steps.Select(s => s.Step));
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(0, 2000)]
    [InlineData(TestJob.Steps, 1)]
    [InlineData(-1, 1)]
    public async Task Bad_counts_and_steps_are_invalid_argument(long firstStep, int count)
    {
        using var job = new TestJob();
        await job.RegisterAll();

        var e = Assert.Throws<RpcException>(() => job.Batches(1, 0, firstStep, count));

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains("refused (InvalidArgument): batches", job.LogText());
    }

    [Fact]
    public void Batches_before_the_world_is_complete_are_refused()
    {
        using var job = new TestJob();

        var e = Assert.Throws<RpcException>(() => job.Batches(1, 0, 0, 1));

        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
    }
}
