// Tests for ShardWriter: the exact llm.c byte layout and the temporary-file-then-rename discipline.
namespace Data.UnitTests;

public sealed class ShardWriterTests : IDisposable
{
    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void The_file_is_an_llm_c_header_followed_by_little_endian_tokens()
    {
        string path = temp.File("s.bin");

        ShardWriter.Write(path, [1, 258, 65535]);

        byte[] bytes = File.ReadAllBytes(path);
        Assert.Equal(1024 + 6, bytes.Length);
        Assert.Equal(20240520, BitConverter.ToInt32(bytes, 0));
        Assert.Equal(1, BitConverter.ToInt32(bytes, 4));
        Assert.Equal(3, BitConverter.ToInt32(bytes, 8));
        Assert.All(bytes[12..1024], b => Assert.Equal(0, b));
        Assert.Equal<byte>([1, 0, 2, 1, 255, 255], bytes[1024..]);
    }

    [Fact]
    public void No_temporary_file_remains_and_an_existing_shard_is_replaced()
    {
        string path = temp.File("s.bin");
        ShardWriter.Write(path, [1, 2, 3, 4]);

        ShardWriter.Write(path, [9]);

        Assert.Equal([path], Directory.GetFiles(temp.Path));
        using var shard = TokenShard.Open(path, 50257);
        var read = new int[1];
        shard.Read(0, read);
        Assert.Equal(1, shard.TokenCount);
        Assert.Equal(9, read[0]);
    }

    [Fact]
    public void A_shard_with_zero_tokens_is_refused_naming_the_path()
    {
        string path = temp.File("empty.bin");

        var error = Assert.Throws<ArgumentException>(() => ShardWriter.Write(path, []));

        Assert.Contains(path, error.Message);
        Assert.Empty(Directory.GetFiles(temp.Path));
    }

    [Fact]
    public void A_failed_write_leaves_nothing_under_either_name()
    {
        string path = Path.Combine(temp.Path, "missing-dir", "s.bin");

        Assert.ThrowsAny<IOException>(() => ShardWriter.Write(path, [1]));

        Assert.False(File.Exists(path));
        Assert.False(File.Exists(path + ".tmp"));
    }
}
