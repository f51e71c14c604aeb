// Writes llm.c-format token shards atomically (temporary file, then rename).
using System.Runtime.InteropServices;

namespace Data;

/// <summary>Writes llm.c / modded-nanogpt shards: 256 int32 header [20240520, 1, count, 0...], then count uint16 tokens.</summary>
public static class ShardWriter
{
    /// <summary>
    /// Writes tokens to path + ".tmp", flushes it to disk, then renames it over path, so a crash never leaves a
    /// half-written shard under the final name. The directory must exist.
    /// </summary>
    public static void Write(string path, ReadOnlySpan<ushort> tokens)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (tokens.IsEmpty)
        {
            throw new ArgumentException($"{path}: refusing to write a shard with zero tokens", nameof(tokens));
        }

        if (!BitConverter.IsLittleEndian)
        {
            throw new PlatformNotSupportedException($"{path}: shards are little-endian and this host is big-endian");
        }

        string temporary = path + ".tmp";
        try
        {
            WriteFile(temporary, tokens);
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            if (File.Exists(temporary))
            {
                File.Delete(temporary);
            }

            throw;
        }
    }

    private static void WriteFile(string path, ReadOnlySpan<ushort> tokens)
    {
        Span<int> header = stackalloc int[TokenShard.LlmCHeaderBytes / sizeof(int)];
        header.Clear();
        header[0] = TokenShard.LlmCMagic;
        header[1] = TokenShard.LlmCVersion;
        header[2] = tokens.Length;
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        stream.Write(MemoryMarshal.AsBytes(header));
        stream.Write(MemoryMarshal.AsBytes(tokens));
        stream.Flush(flushToDisk: true);
    }
}
