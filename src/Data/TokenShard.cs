// Memory-mapped, validated, read-only access to one token shard file (llm.c header or raw uint16).
using System.IO.Enumeration;
using System.IO.MemoryMappedFiles;

namespace Data;

/// <summary>
/// One token shard, memory-mapped for its lifetime and validated once at open (layout, size, every token id &lt; vocabSize).
/// Reads are thread-safe; do not Dispose while another thread is reading.
/// </summary>
public sealed unsafe class TokenShard : ITokenSource, IDisposable
{
    /// <summary>llm.c header[0]. Auto detection is safe for GPT-2 data: read as two little-endian uint16 the magic is
    /// tokens 55432, 308, and 55432 is above GPT-2's vocabulary of 50257, so a raw GPT-2 stream cannot start with it.
    /// (Raw files of a vocabulary above 55432 should be opened with ShardFormat.Raw.) A file without the magic whose
    /// header[2] is exactly its token count after a 1024-byte header is an llm.c shard with a damaged magic: Auto refuses it.</summary>
    public const int LlmCMagic = 20240520;

    /// <summary>llm.c header[1]: version 1 stores uint16 tokens.</summary>
    public const int LlmCVersion = 1;

    /// <summary>llm.c header size: 256 int32.</summary>
    public const int LlmCHeaderBytes = 256 * sizeof(int);

    private readonly MemoryMappedFile file;
    private readonly MemoryMappedViewAccessor view;
    private readonly ushort* tokens;
    private int disposed;

    private TokenShard(string path, FileStream stream, int vocabSize, ShardFormat format)
    {
        Path = path;
        long length = stream.Length;
        file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
        view = file.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
        byte* data = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref data);
        try
        {
            data += view.PointerOffset;
            (Format, long offset, TokenCount) = Layout(path, data, length, format);
            tokens = (ushort*)(data + offset);
            CheckVocabulary(path, tokens, TokenCount, vocabSize);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The file this shard maps.</summary>
    public string Path { get; }

    /// <summary>The layout found at open (never Auto).</summary>
    public ShardFormat Format { get; }

    /// <inheritdoc/>
    public long TokenCount { get; }

    /// <inheritdoc/>
    public string Name => Path;

    /// <summary>
    /// Maps and validates a shard. Every problem with the file is a DataFormatException whose message starts with the path.
    /// </summary>
    /// <param name="vocabSize">Exclusive upper bound on token ids, in [1, 65536].</param>
    public static TokenShard Open(string path, int vocabSize, ShardFormat format = ShardFormat.Auto)
    {
        ArgumentNullException.ThrowIfNull(path);
        CheckArguments(path, vocabSize, format);
        if (!File.Exists(path))
        {
            throw new DataFormatException($"{path}: file not found");
        }

        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        try
        {
            if (stream.Length == 0)
            {
                throw new DataFormatException($"{path}: file is empty (0 bytes, no tokens)");
            }

            return new TokenShard(path, stream, vocabSize, format);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens every file matching pattern, a path whose file name may hold * and ? (e.g. data/brown_train_*.bin),
    /// in ordinal order of path. Throws DataFormatException naming the pattern when nothing matches.
    /// </summary>
    public static TokenShard[] OpenShards(string pattern, int vocabSize, ShardFormat format = ShardFormat.Auto)
    {
        ArgumentNullException.ThrowIfNull(pattern);
        string[] paths = MatchPattern(pattern);
        var shards = new List<TokenShard>(paths.Length);
        try
        {
            foreach (string path in paths)
            {
                shards.Add(Open(path, vocabSize, format));
            }
        }
        catch
        {
            shards.ForEach(s => s.Dispose());
            throw;
        }

        return [.. shards];
    }

    /// <inheritdoc/>
    public void Read(long start, Span<int> destination)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref disposed) != 0, this);
        TokenRange.Check(Path, TokenCount, start, destination.Length);
        TokenRange.Widen(new ReadOnlySpan<ushort>(tokens + start, destination.Length), destination);
    }

    /// <summary>Unmaps the file.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref disposed, 1) != 0)
        {
            return;
        }

        view.SafeMemoryMappedViewHandle.ReleasePointer();
        view.Dispose();
        file.Dispose();
    }

    private static void CheckArguments(string path, int vocabSize, ShardFormat format)
    {
        if (vocabSize < 1 || vocabSize > 65536)
        {
            throw new ArgumentOutOfRangeException(nameof(vocabSize), $"{path}: vocabSize {vocabSize} must be in [1, 65536] for uint16 tokens");
        }

        if (!Enum.IsDefined(format))
        {
            throw new ArgumentOutOfRangeException(nameof(format), $"{path}: unknown ShardFormat {(int)format}");
        }

        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException($"{path}: shards are little-endian and this host is big-endian");
        }
    }

    private static string[] MatchPattern(string pattern)
    {
        string directory = System.IO.Path.GetDirectoryName(pattern) is { Length: > 0 } d ? d : ".";
        string name = System.IO.Path.GetFileName(pattern);
        if (directory.IndexOfAny(['*', '?']) >= 0 || name.Length == 0)
        {
            throw new DataFormatException($"{pattern}: shard pattern must end in a file name; wildcards are allowed only there");
        }

        string[] paths = Directory.Exists(directory)
            ? [.. Directory.EnumerateFiles(directory)
                .Where(p => FileSystemName.MatchesSimpleExpression(name, System.IO.Path.GetFileName(p), ignoreCase: false))
                .Order(StringComparer.Ordinal)]
            : [];
        return paths.Length > 0 ? paths : throw new DataFormatException($"{pattern}: no shard files match this pattern");
    }

    /// <summary>Returns (format, byte offset of token 0, token count) after checking the layout against the file length.</summary>
    private static (ShardFormat Format, long Offset, long Count) Layout(string path, byte* data, long length, ShardFormat format)
    {
        if (format == ShardFormat.Auto)
        {
            format = length >= sizeof(int) && *(int*)data == LlmCMagic ? ShardFormat.LlmC : ShardFormat.Raw;
            if (format == ShardFormat.Raw && FitsLlmCLayout((int*)data, length))
            {
                throw new DataFormatException(
                    $"{path}: has the size of an llm.c shard ({length} bytes: a {LlmCHeaderBytes}-byte header whose token count {((int*)data)[2]} fills the rest) " +
                    $"but its magic is {*(int*)data}, expected {LlmCMagic}: a damaged header; read it as headerless uint16 tokens only if it is one (data.format = raw)");
            }
        }

        return format == ShardFormat.LlmC
            ? (format, LlmCHeaderBytes, LlmCTokenCount(path, (int*)data, length))
            : (format, 0, RawTokenCount(path, length));
    }

    /// <summary>True when header[2], read as an llm.c token count, is exactly what follows a 1024-byte header.</summary>
    private static bool FitsLlmCLayout(int* header, long length) =>
        length > LlmCHeaderBytes && header[2] > 0 && length == LlmCHeaderBytes + (2L * header[2]);

    private static long LlmCTokenCount(string path, int* header, long length)
    {
        if (length < sizeof(int) || header[0] != LlmCMagic)
        {
            string found = length < sizeof(int) ? $"only {length} bytes" : $"first int32 {header[0]}";
            throw new DataFormatException($"{path}: not an llm.c shard: {found}, expected magic {LlmCMagic} (headerless uint16 files need ShardFormat.Raw)");
        }

        if (length < LlmCHeaderBytes)
        {
            throw new DataFormatException($"{path}: truncated: file is {length} bytes, shorter than the {LlmCHeaderBytes}-byte llm.c header");
        }

        if (header[1] != LlmCVersion)
        {
            throw new DataFormatException($"{path}: unsupported llm.c shard version {header[1]} (only version {LlmCVersion}, uint16 tokens, is supported)");
        }

        long count = header[2];
        if (count <= 0)
        {
            throw new DataFormatException($"{path}: llm.c header declares {count} tokens; a shard needs at least one");
        }

        long expected = LlmCHeaderBytes + (2 * count);
        if (length != expected)
        {
            string problem = length < expected ? "truncated" : "trailing bytes after the tokens";
            throw new DataFormatException($"{path}: {problem}: file is {length} bytes but the header's {count} tokens need {expected} bytes");
        }

        return count;
    }

    private static long RawTokenCount(string path, long length)
    {
        if (length % 2 != 0)
        {
            throw new DataFormatException($"{path}: raw uint16 shard has odd length {length} bytes");
        }

        return length / 2;
    }

    /// <summary>One vectorised pass over the mapped tokens (memory-bandwidth bound), in chunks because spans are int-indexed.</summary>
    private static void CheckVocabulary(string path, ushort* tokens, long count, int vocabSize)
    {
        if (vocabSize > ushort.MaxValue)
        {
            return;
        }

        const int Chunk = 1 << 30;
        for (long begin = 0; begin < count; begin += Chunk)
        {
            var span = new ReadOnlySpan<ushort>(tokens + begin, (int)Math.Min(Chunk, count - begin));
            int bad = span.IndexOfAnyInRange((ushort)vocabSize, ushort.MaxValue);
            if (bad >= 0)
            {
                throw new DataFormatException($"{path}: token id {span[bad]} at position {begin + bad} is >= vocabSize {vocabSize}");
            }
        }
    }
}
