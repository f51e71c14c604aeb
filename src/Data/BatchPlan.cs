// The deterministic global batch order: seeded per-epoch permutations of all sequences, cut into fixed-size batches.
namespace Data;

/// <summary>
/// Global step k is positions [k B, (k + 1) B) of the endless concatenation of epochs, where epoch e is a Fisher-Yates
/// permutation of all sequence indices seeded by (seed, e); a batch may straddle an epoch boundary. The order depends
/// only on (plan, batchSize, seed, step), never on the world size, so every rank can take its slice of the same batch.
/// Thread-safe.
/// </summary>
public sealed class BatchPlan
{
    private const ulong Domain = 0xBA7C_4E90;

    private readonly Lock gate = new();
    private (long Epoch, int[] Order) recent = (-1, []);
    private (long Epoch, int[] Order) older = (-1, []);

    public BatchPlan(SequencePlan plan, int batchSize, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (batchSize < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(batchSize), $"BatchPlan: batchSize {batchSize} must be at least 1");
        }

        if (plan.Count > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(plan), $"BatchPlan: {plan.Count} sequences exceed the {Array.MaxLength} an epoch permutation can hold");
        }

        Plan = plan;
        BatchSize = batchSize;
        Seed = seed;
    }

    public SequencePlan Plan { get; }

    /// <summary>B: sequences per global batch.</summary>
    public int BatchSize { get; }

    public ulong Seed { get; }

    /// <summary>The B sequence indices of global step `step`, in batch-row order.</summary>
    public long[] GlobalBatch(long step)
    {
        long first = FirstPosition(step);
        long count = Plan.Count;
        var batch = new long[BatchSize];
        for (int row = 0; row < BatchSize; row++)
        {
            long position = first + row;
            batch[row] = Order(position / count)[position % count];
        }

        return batch;
    }

    /// <summary>
    /// One rank's share of step `step`: the global batch is `microBatches` micro-batches of b = BatchSize / microBatches
    /// rows; rank r takes rows [r b / W, (r + 1) b / W) of each, micro-batch after micro-batch. Concatenated over the ranks
    /// micro-batch by micro-batch, the shares are the global batch, whatever W is.
    /// </summary>
    public long[] RankRows(long step, int rank, int worldSize, int microBatches)
    {
        if (microBatches < 1 || BatchSize % microBatches != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(microBatches), $"BatchPlan: {microBatches} micro-batches do not divide the batch of {BatchSize}");
        }

        int micro = BatchSize / microBatches;
        if (worldSize < 1 || micro % worldSize != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(worldSize), $"BatchPlan: world size {worldSize} does not divide the micro-batch of {micro}");
        }

        if (rank < 0 || rank >= worldSize)
        {
            throw new ArgumentOutOfRangeException(nameof(rank), $"BatchPlan: rank {rank} outside world size {worldSize}");
        }

        long[] batch = GlobalBatch(step);
        int share = micro / worldSize;
        var rows = new long[share * microBatches];
        for (int m = 0; m < microBatches; m++)
        {
            Array.Copy(batch, m * micro + rank * share, rows, m * share, share);
        }

        return rows;
    }

    /// <summary>Where step `step` begins: its epoch and its position (sequences already taken) inside that epoch.</summary>
    public (long Epoch, long Position) CursorAt(long step)
    {
        long first = FirstPosition(step);
        return (first / Plan.Count, first % Plan.Count);
    }

    /// <summary>Fills the step's rows, row-major: inputs and targets are [B, T] with T = Plan.SequenceLength.</summary>
    public void Fill(long step, int[] inputs, int[] targets)
    {
        ArgumentNullException.ThrowIfNull(inputs);
        ArgumentNullException.ThrowIfNull(targets);
        int t = Plan.SequenceLength;
        long expected = (long)BatchSize * t;
        if (inputs.Length != expected || targets.Length != expected)
        {
            throw new ArgumentException(
                $"BatchPlan.Fill: inputs length {inputs.Length} and targets length {targets.Length} must both equal batchSize {BatchSize} x sequenceLength {t} = {expected}");
        }

        Plan.FillRows(GlobalBatch(step), inputs, targets);
    }

    private long FirstPosition(long step)
    {
        if (step < 0 || step > long.MaxValue / BatchSize)
        {
            throw new ArgumentOutOfRangeException(nameof(step), $"BatchPlan: step {step} must be in [0, {long.MaxValue / BatchSize}]");
        }

        return step * BatchSize;
    }

    /// <summary>Epoch `epoch`'s permutation; the two most recent are cached, which covers a batch straddling two epochs.</summary>
    private int[] Order(long epoch)
    {
        lock (gate)
        {
            if (recent.Epoch == epoch)
            {
                return recent.Order;
            }

            if (older.Epoch == epoch)
            {
                (this.recent, older) = (older, this.recent);
                return recent.Order;
            }

            older = recent;
            recent = (epoch, Permutation(epoch));
            return recent.Order;
        }
    }

    private int[] Permutation(long epoch)
    {
        var rng = SplitMix64.Derive(Seed, Domain, (ulong)epoch);
        var order = new int[Plan.Count];
        for (int i = 0; i < order.Length; i++)
        {
            order[i] = i;
        }

        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = (int)rng.NextBelow((ulong)i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }

        return order;
    }
}
