// Cuts token sources into fixed-length training sequences (inputs plus shifted targets) that never cross a source.
namespace Data;

/// <summary>
/// Sequence i is sequenceLength + 1 consecutive tokens of one source: inputs are the first sequenceLength, targets the
/// last sequenceLength. Sequences start every sequenceLength tokens (so each token is a target exactly once), a source of
/// N tokens holds floor((N - 1) / sequenceLength) of them, and they are numbered source by source.
/// </summary>
public sealed class SequencePlan
{
    private readonly ITokenSource[] sources;
    private readonly long[] firstIndex;

    public SequencePlan(IReadOnlyList<ITokenSource> sources, int sequenceLength)
    {
        ArgumentNullException.ThrowIfNull(sources);
        if (sources.Count == 0)
        {
            throw new ArgumentException("SequencePlan: sources is empty", nameof(sources));
        }

        if (sequenceLength < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(sequenceLength), $"SequencePlan: sequenceLength {sequenceLength} must be at least 1");
        }

        this.sources = [.. sources];
        SequenceLength = sequenceLength;
        firstIndex = new long[this.sources.Length + 1];
        for (int s = 0; s < this.sources.Length; s++)
        {
            firstIndex[s + 1] = firstIndex[s] + SequencesIn(this.sources[s].TokenCount);
        }

        if (Count == 0)
        {
            string counts = string.Join(", ", this.sources.Select(s => $"{s.Name}: {s.TokenCount}"));
            throw new ArgumentException(
                $"SequencePlan: no source holds one sequence of sequenceLength {sequenceLength} + 1 = {sequenceLength + 1} tokens (token counts: {counts})",
                nameof(sources));
        }
    }

    /// <summary>The sources, in numbering order.</summary>
    public IReadOnlyList<ITokenSource> Sources => sources;

    /// <summary>T: tokens per input row (and per target row).</summary>
    public int SequenceLength { get; }

    /// <summary>Total number of sequences over all sources.</summary>
    public long Count => firstIndex[^1];

    /// <summary>The source index and the token offset inside it where sequence `index` begins.</summary>
    public (int Source, long Start) this[long index]
    {
        get
        {
            if (index < 0 || index >= Count)
            {
                throw new ArgumentOutOfRangeException(nameof(index), $"SequencePlan: sequence index {index} is outside [0, {Count})");
            }

            int source = SourceOf(index);
            return (source, (index - firstIndex[source]) * SequenceLength);
        }
    }

    /// <summary>Identifies the cut: sequence length, count and the sources' token counts (not their paths, which may
    /// differ between machines), hashed. Two processes that agree on it fill the same index with the same tokens.</summary>
    public string Fingerprint()
    {
        var text = $"T={SequenceLength};N={Count};" + string.Join(",", sources.Select(s => s.TokenCount));
        return Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(text)))[..16];
    }

    /// <summary>Writes the sequences `rows` one after another, row-major: inputs and targets are [rows, T].</summary>
    public void FillRows(IReadOnlyList<long> rows, Span<int> inputs, Span<int> targets)
    {
        long expected = (long)rows.Count * SequenceLength;
        if (inputs.Length != expected || targets.Length != expected)
        {
            throw new ArgumentException(
                $"SequencePlan.FillRows: inputs length {inputs.Length} and targets length {targets.Length} must both equal {rows.Count} rows x sequenceLength {SequenceLength} = {expected}");
        }

        for (int row = 0; row < rows.Count; row++)
        {
            Fill(rows[row], inputs.Slice(row * SequenceLength, SequenceLength), targets.Slice(row * SequenceLength, SequenceLength));
        }
    }

    /// <summary>Writes sequence `index`: inputs = tokens [start, start + T), targets = tokens [start + 1, start + T + 1).</summary>
    public void Fill(long index, Span<int> inputs, Span<int> targets)
    {
        if (inputs.Length != SequenceLength || targets.Length != SequenceLength)
        {
            throw new ArgumentException(
                $"SequencePlan.Fill: inputs length {inputs.Length} and targets length {targets.Length} must both equal sequenceLength {SequenceLength}");
        }

        (int source, long start) = this[index];
        ITokenSource tokens = sources[source];
        tokens.Read(start, inputs);
        inputs[1..].CopyTo(targets);
        tokens.Read(start + SequenceLength, targets[^1..]);
    }

    private long SequencesIn(long tokenCount) => tokenCount < 1 ? 0 : (tokenCount - 1) / SequenceLength;

    /// <summary>The last source whose first index is &lt;= index; empty sources share their first index with the next one.</summary>
    private int SourceOf(long index)
    {
        int low = 0;
        int high = sources.Length;
        while (high - low > 1)
        {
            int middle = (low + high) / 2;
            if (firstIndex[middle] <= index)
            {
                low = middle;
            }
            else
            {
                high = middle;
            }
        }

        return low;
    }
}
