// Collects one split's tokens and writes them out as numbered llm.c shards of at most ShardTokens tokens.
namespace Data;

/// <summary>Buffers uint16 tokens (grown on demand up to the shard size) and writes {name}_{split}_{k:D6}.bin when full.</summary>
internal sealed class ShardSink(string directory, string name, string split, int shardTokens)
{
    private readonly List<string> _written = [];
    private ushort[] _buffer = new ushort[Math.Min(shardTokens, 1 << 16)];
    private int _count;

    /// <summary>Tokens appended so far, written or buffered.</summary>
    public long Tokens { get; private set; }

    /// <summary>Shard files written so far, in order.</summary>
    public IReadOnlyList<string> Written => _written;

    /// <summary>The path of shard k of this split.</summary>
    public static string ShardPath(string directory, string name, string split, int k) =>
        Path.Combine(directory, $"{name}_{split}_{k:D6}.bin");

    /// <summary>Appends token ids, which must be in [0, 65535]; a document may continue into the next shard.</summary>
    public void Append(ReadOnlySpan<int> tokens)
    {
        while (!tokens.IsEmpty)
        {
            int take = Math.Min(tokens.Length, shardTokens - _count);
            Reserve(_count + take);
            Narrow(tokens[..take], _buffer.AsSpan(_count, take));
            _count += take;
            Tokens += take;
            tokens = tokens[take..];
            if (_count == shardTokens)
            {
                Flush();
            }
        }
    }

    /// <summary>Writes the buffered tokens, if any, as the next shard.</summary>
    public void Flush()
    {
        if (_count == 0)
        {
            return;
        }

        string path = ShardPath(directory, name, split, _written.Count);
        ShardWriter.Write(path, _buffer.AsSpan(0, _count));
        _written.Add(path);
        _count = 0;
    }

    /// <summary>Removes every shard this sink wrote (after a failed run).</summary>
    public void DeleteWritten()
    {
        foreach (string path in _written)
        {
            File.Delete(path);
        }

        _written.Clear();
    }

    private void Reserve(int needed)
    {
        if (needed > _buffer.Length)
        {
            Array.Resize(ref _buffer, (int)Math.Min(shardTokens, Math.Max(needed, 2L * _buffer.Length)));
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
