// Collects one split's tokens and writes them out as numbered llm.c shards of at most ShardTokens tokens.
namespace Data;

/// <summary>Buffers uint16 tokens (grown on demand up to the shard size) and writes {name}_{split}_{k:D6}.bin when full.</summary>
internal sealed class ShardSink(string directory, string name, string split, int shardTokens)
{
    private readonly List<string> written = [];
    private ushort[] buffer = new ushort[Math.Min(shardTokens, 1 << 16)];
    private int count;

    /// <summary>Tokens appended so far, written or buffered.</summary>
    public long Tokens { get; private set; }

    /// <summary>Shard files written so far, in order.</summary>
    public IReadOnlyList<string> Written => written;

    /// <summary>The path of shard k of this split.</summary>
    public static string ShardPath(string directory, string name, string split, int k) =>
        Path.Combine(directory, $"{name}_{split}_{k:D6}.bin");

    /// <summary>Appends token ids, which must be in [0, 65535]; a document may continue into the next shard.</summary>
    public void Append(ReadOnlySpan<int> tokens)
    {
        while (!tokens.IsEmpty)
        {
            int take = Math.Min(tokens.Length, shardTokens - count);
            Reserve(count + take);
            Narrow(tokens[..take], buffer.AsSpan(count, take));
            count += take;
            Tokens += take;
            tokens = tokens[take..];
            if (count == shardTokens)
            {
                Flush();
            }
        }
    }

    /// <summary>Writes the buffered tokens, if any, as the next shard.</summary>
    public void Flush()
    {
        if (count == 0)
        {
            return;
        }

        string path = ShardPath(directory, name, split, written.Count);
        ShardWriter.Write(path, buffer.AsSpan(0, count));
        written.Add(path);
        count = 0;
    }

    /// <summary>Removes every shard this sink wrote (after a failed run).</summary>
    public void DeleteWritten()
    {
        foreach (string path in written)
        {
            File.Delete(path);
        }

        written.Clear();
    }

    private void Reserve(int needed)
    {
        if (needed > buffer.Length)
        {
            Array.Resize(ref buffer, (int)Math.Min(shardTokens, Math.Max(needed, 2L * buffer.Length)));
        }
    }

    private void Narrow(ReadOnlySpan<int> source, Span<ushort> destination)
    {
        for (int i = 0; i < source.Length; i++)
        {
            int id = source[i];
            if ((uint)id > ushort.MaxValue)
            {
                throw new DataFormatException($"{name}_{split}: token id {id} does not fit the uint16 shard format");
            }

            destination[i] = (ushort)id;
        }
    }
}
