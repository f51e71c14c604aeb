// The ranks' layout: W = dp x tp, who is whose replica and shard, and the batch rule. The one home of that arithmetic.
namespace Job;

/// <summary>
/// A 2-D layout of W = dp x tp ranks: rank r is vocabulary shard r % tp of replica r / tp. The tp ranks of a replica
/// (its vocabulary group) see the same rows and hold the embeddings split by rows; the dp replicas each train on their
/// dp-th of every micro-batch, and every gradient is averaged over the ranks that hold the same parameter (the data
/// group: same shard, other replica).
/// </summary>
public sealed record ParallelLayout
{
    /// <param name="worldSize">W: every rank of the job.</param>
    /// <param name="vocabParallel">tp: vocabulary shards per replica; must divide W.</param>
    public ParallelLayout(int worldSize, int vocabParallel = 1)
    {
        if (worldSize < 1) throw new ArgumentException($"job.world_size = {worldSize}: must be at least 1");
        if (vocabParallel < 1 || worldSize % vocabParallel != 0)
            throw new ArgumentException($"job.vocab_parallel = {vocabParallel}: must be at least 1 and divide job.world_size = {worldSize}");
        (WorldSize, VocabParallel) = (worldSize, vocabParallel);
    }

    /// <summary>The layout of a job's options (job.world_size, job.vocab_parallel).</summary>
    public static ParallelLayout Of(JobOptions job) => new(job.WorldSize, job.VocabParallel);

    /// <summary>W: ranks in the job.</summary>
    public int WorldSize { get; }
    /// <summary>tp: vocabulary shards per replica (the size of a vocabulary group).</summary>
    public int VocabParallel { get; }
    /// <summary>dp: model replicas (the size of a data group).</summary>
    public int DataParallel => WorldSize / VocabParallel;

    /// <summary>The replica of rank r: r / tp (its colour in the vocabulary-group split).</summary>
    public int DataRank(int rank) => Checked(rank) / VocabParallel;
    /// <summary>The vocabulary shard of rank r: r % tp (its colour in the data-group split).</summary>
    public int VocabRank(int rank) => Checked(rank) % VocabParallel;

    /// <summary>Sequences of each micro-batch that one replica trains on: B / dp. Throws naming train.batch_size
    /// unless dp divides B, so that every replica takes an equal share of each micro-batch.</summary>
    public int ReplicaBatch(int batchSize)
    {
        if (batchSize < 1 || batchSize % DataParallel != 0)
            throw new ArgumentException($"train.batch_size = {batchSize}: must be divisible by the data-parallel size {DataParallel} " +
                                        $"(job.world_size {WorldSize} / job.vocab_parallel {VocabParallel}), so that every replica takes an equal share of each micro-batch");
        return batchSize / DataParallel;
    }

    int Checked(int rank) => rank >= 0 && rank < WorldSize ? rank
        : throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank {rank} is outside the world of {WorldSize} ranks (0..{WorldSize - 1})");

    public override string ToString() => $"{WorldSize} ranks = {DataParallel} replicas (dp) x {VocabParallel} vocabulary shards (tp)";
}
