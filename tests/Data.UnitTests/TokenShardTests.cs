// Tests for TokenShard: both layouts, Auto detection, validation messages, reads and shard patterns.
using System.Runtime.InteropServices;

namespace Data.UnitTests;

public sealed class TokenShardTests : IDisposable
{
    private const int Gpt2Vocab = 50257;
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void A_written_shard_reads_back_the_same_tokens()
    {
        ushort[] tokens = [.. Enumerable.Range(0, 10_000).Select(i => (ushort)(i * 7 % Gpt2Vocab))];
        string path = temp.File("a.bin");
        ShardWriter.Write(path, tokens);

        using var shard = TokenShard.Open(path, Gpt2Vocab);

        Assert.Equal(ShardFormat.LlmC, shard.Format);
        Assert.Equal(path, shard.Path);
        Assert.Equal(path, shard.Name);
        Assert.Equal(tokens.Length, shard.TokenCount);
        var all = new int[tokens.Length];
        shard.Read(0, all);
        Assert.Equal(tokens.Select(t => (int)t), all);
        var middle = new int[37];
        shard.Read(1234, middle);
        Assert.Equal(tokens.Skip(1234).Take(37).Select(t => (int)t), middle);
    }

    [Fact]
    public void A_raw_file_is_read_as_bare_uint16_tokens()
    {
        ushort[] tokens = [5, 0, 65535, 42, 50256];
        string path = WriteRaw("raw.bin", tokens);

        using var shard = TokenShard.Open(path, 65536, ShardFormat.Raw);

        Assert.Equal(ShardFormat.Raw, shard.Format);
        Assert.Equal(5, shard.TokenCount);
        var read = new int[5];
        shard.Read(0, read);
        Assert.Equal([5, 0, 65535, 42, 50256], read);
    }

    [Fact]
    public void Auto_detects_the_llm_c_header()
    {
        string path = temp.File("llmc.bin");
        ShardWriter.Write(path, [1, 2, 3]);

        using var shard = TokenShard.Open(path, Gpt2Vocab, ShardFormat.Auto);

        Assert.Equal(ShardFormat.LlmC, shard.Format);
        Assert.Equal(3, shard.TokenCount);
    }

    [Fact]
    public void Auto_treats_a_headerless_file_as_raw()
    {
        string path = WriteRaw("train.bin", [15496, 995, 50256, 7]);

        using var shard = TokenShard.Open(path, Gpt2Vocab, ShardFormat.Auto);

        Assert.Equal(ShardFormat.Raw, shard.Format);
        var read = new int[4];
        shard.Read(0, read);
        Assert.Equal([15496, 995, 50256, 7], read);
    }

    [Fact]
    public void The_magic_read_as_raw_tokens_starts_above_the_GPT2_vocabulary()
    {
        Assert.Equal(55432, TokenShard.LlmCMagic & 0xFFFF);
        Assert.Equal(308, TokenShard.LlmCMagic >> 16);
        Assert.True((TokenShard.LlmCMagic & 0xFFFF) >= Gpt2Vocab);
    }

    [Fact]
    public void Explicit_llm_c_on_a_headerless_file_names_the_file_and_the_magic()
    {
        string path = WriteRaw("raw.bin", [1, 2, 3, 4]);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab, ShardFormat.LlmC));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("20240520", error.Message);
        Assert.Contains((2 << 16 | 1).ToString(), error.Message);
    }

    [Fact]
    public void Auto_refuses_a_file_of_llm_c_size_whose_magic_is_wrong_naming_the_file_and_both_magics()
    {
        string path = WriteDamagedMagic("damaged.bin");

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, 65536));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("magic is 20240521, expected 20240520", error.Message);
        Assert.Contains("data.format = raw", error.Message);
    }

    [Fact]
    public void A_file_of_llm_c_size_with_a_wrong_magic_is_read_as_raw_when_raw_is_asked_for()
    {
        string path = WriteDamagedMagic("damaged.bin");

        using var shard = TokenShard.Open(path, 65536, ShardFormat.Raw);

        Assert.Equal(ShardFormat.Raw, shard.Format);
        Assert.Equal((1024 + 6) / 2, shard.TokenCount);
    }

    [Fact]
    public void A_truncated_shard_reports_the_file_size_and_the_size_the_header_needs()
    {
        string path = temp.File("short.bin");
        ShardWriter.Write(path, new ushort[100]);
        using (var stream = new FileStream(path, FileMode.Open))
        {
            stream.SetLength(1024 + 150);
        }

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("truncated", error.Message);
        Assert.Contains("1174", error.Message);
        Assert.Contains("1224", error.Message);
    }

    [Fact]
    public void A_file_shorter_than_the_header_is_truncated()
    {
        string path = temp.File("header.bin");
        File.WriteAllBytes(path, MemoryMarshal.AsBytes<int>([TokenShard.LlmCMagic, 1, 5]).ToArray());

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("truncated", error.Message);
        Assert.Contains("12 bytes", error.Message);
    }

    [Fact]
    public void An_unsupported_version_is_named()
    {
        string path = WriteHeader("v2.bin", version: 2, count: 1, tokenBytes: 2);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("version 2", error.Message);
    }

    [Fact]
    public void A_header_declaring_zero_tokens_is_rejected()
    {
        string path = WriteHeader("zero.bin", version: 1, count: 0, tokenBytes: 0);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("0 tokens", error.Message);
    }

    [Fact]
    public void Trailing_bytes_after_the_declared_tokens_are_rejected()
    {
        string path = WriteHeader("long.bin", version: 1, count: 2, tokenBytes: 6);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("1030 bytes", error.Message);
        Assert.Contains("1028 bytes", error.Message);
    }

    [Fact]
    public void An_empty_file_is_rejected()
    {
        string path = temp.File("empty.bin");
        File.WriteAllBytes(path, []);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("empty", error.Message);
    }

    [Fact]
    public void A_raw_file_of_odd_length_is_rejected()
    {
        string path = temp.File("odd.bin");
        File.WriteAllBytes(path, [1, 0, 2]);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab, ShardFormat.Raw));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("odd length 3", error.Message);
    }

    [Fact]
    public void A_missing_file_is_named()
    {
        string path = temp.File("nowhere.bin");

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("not found", error.Message);
    }

    [Fact]
    public void A_token_at_or_above_the_vocabulary_is_reported_with_its_position_and_value()
    {
        string path = temp.File("bad.bin");
        ShardWriter.Write(path, [1, 2, 3, Gpt2Vocab, 4]);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.StartsWith(path, error.Message);
        Assert.Contains("token id 50257 at position 3", error.Message);
    }

    [Fact]
    public void The_vocabulary_scan_finds_the_first_bad_token_deep_in_a_large_shard()
    {
        var tokens = new ushort[3_000_001];
        tokens[2_999_999] = 60000;
        tokens[3_000_000] = 61000;
        string path = WriteRaw("large.bin", tokens);

        var error = Assert.Throws<DataFormatException>(() => TokenShard.Open(path, Gpt2Vocab));

        Assert.Contains("token id 60000 at position 2999999", error.Message);
        using var wide = TokenShard.Open(path, 65536);
        Assert.Equal(tokens.Length, wide.TokenCount);
    }

    [Fact]
    public void A_vocabulary_outside_uint16_is_rejected_naming_it()
    {
        string path = WriteRaw("raw.bin", [1]);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => TokenShard.Open(path, 70000));

        Assert.Contains("vocabSize 70000", error.Message);
    }

    [Fact]
    public void Reads_outside_the_shard_throw_naming_the_source_start_and_length()
    {
        string path = temp.File("ten.bin");
        ShardWriter.Write(path, new ushort[10]);
        using var shard = TokenShard.Open(path, Gpt2Vocab);

        var past = Assert.Throws<ArgumentOutOfRangeException>(() => shard.Read(8, new int[3]));
        Assert.Throws<ArgumentOutOfRangeException>(() => shard.Read(-1, new int[1]));
        shard.Read(10, Span<int>.Empty);
        shard.Read(7, new int[3]);

        Assert.Contains(path, past.Message);
        Assert.Contains("3 tokens at start 8", past.Message);
        Assert.Contains("10 tokens", past.Message);
    }

    [Fact]
    public void Reading_a_disposed_shard_throws()
    {
        string path = temp.File("gone.bin");
        ShardWriter.Write(path, [1, 2]);
        var shard = TokenShard.Open(path, Gpt2Vocab);
        shard.Dispose();
        shard.Dispose();

        Assert.Throws<ObjectDisposedException>(() => shard.Read(0, new int[1]));
    }

    [Fact]
    public void OpenShards_opens_every_match_in_ordinal_order()
    {
        ShardWriter.Write(temp.File("d_train_000001.bin"), [2]);
        ShardWriter.Write(temp.File("d_train_000000.bin"), [1]);
        ShardWriter.Write(temp.File("d_val_000000.bin"), [3]);
        File.WriteAllText(temp.File("d_train_000002.bin.tmp"), "partial");

        TokenShard[] shards = TokenShard.OpenShards(temp.File("d_train_*.bin"), Gpt2Vocab);
        try
        {
            Assert.Equal([temp.File("d_train_000000.bin"), temp.File("d_train_000001.bin")], shards.Select(s => s.Path));
        }
        finally
        {
            Array.ForEach(shards, s => s.Dispose());
        }
    }

    [Fact]
    public void OpenShards_with_no_match_names_the_pattern()
    {
        string pattern = temp.File("none_*.bin");

        var error = Assert.Throws<DataFormatException>(() => TokenShard.OpenShards(pattern, Gpt2Vocab));

        Assert.StartsWith(pattern, error.Message);
        Assert.Contains("no shard files match", error.Message);
    }

    private string WriteRaw(string name, ushort[] tokens)
    {
        string path = temp.File(name);
        File.WriteAllBytes(path, MemoryMarshal.AsBytes<ushort>(tokens).ToArray());
        return path;
    }

    /// <summary>An llm.c shard of 3 tokens whose magic is 20240521: its size still fits the header's token count.</summary>
    private string WriteDamagedMagic(string name)
    {
        string path = temp.File(name);
        ShardWriter.Write(path, [1, 2, 3]);
        using var stream = new FileStream(path, FileMode.Open);
        stream.Write(BitConverter.GetBytes(20240521));
        return path;
    }

    private string WriteHeader(string name, int version, int count, int tokenBytes)
    {
        var header = new int[256];
        (header[0], header[1], header[2]) = (TokenShard.LlmCMagic, version, count);
        string path = temp.File(name);
        File.WriteAllBytes(path, [.. MemoryMarshal.AsBytes<int>(header), .. new byte[tokenBytes]]);
        return path;
    }
}
