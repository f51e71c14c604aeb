// TrainingData over shard files: data.format chooses the layout, and the run is told how each file was read.
using Data;
using Rank.Training;

namespace Rank.UnitTests;

public sealed class TrainingDataTests
{
    [Fact]
    public void Shards_say_how_many_files_were_read_as_each_layout()
    {
        using var temp = new TempDirectory();
        var tokens = Enumerable.Range(0, 4000).Select(i => (ushort)(i % 500)).ToArray();
        ShardWriter.Write(temp.File("d_train_000000.bin"), tokens);
        ShardWriter.Write(temp.File("d_train_000001.bin"), tokens);
        File.WriteAllBytes(temp.File("d_val_000000.bin"), [.. tokens.SelectMany(BitConverter.GetBytes)]);
        var options = new DataOptions { Source = "shards", TrainShards = temp.File("d_train_*.bin"), ValShards = temp.File("d_val_*.bin"), VocabSize = 512 };

        using var data = new TrainingData(options, sequenceLength: 32);

        Assert.Equal($"2 read as llmc ({temp.File("d_train_000000.bin")}, ...), 1 read as raw ({temp.File("d_val_000000.bin")})", data.Formats);
    }

    [Fact]
    public void A_damaged_llm_c_header_is_refused_under_auto_and_read_under_raw()
    {
        using var temp = new TempDirectory();
        string path = temp.File("d_train_000000.bin");
        ShardWriter.Write(path, [.. Enumerable.Range(0, 4000).Select(i => (ushort)(i % 500))]);
        using (var stream = new FileStream(path, FileMode.Open)) stream.Write(BitConverter.GetBytes(1));
        var auto = new DataOptions { Source = "shards", TrainShards = path, ValShards = path, VocabSize = 65536 };

        var e = Assert.Throws<DataFormatException>(() => new TrainingData(auto, sequenceLength: 32));
        using var raw = new TrainingData(auto with { Format = "raw" }, sequenceLength: 32);

        Assert.Contains("magic is 1, expected 20240520", e.Message);
        Assert.StartsWith("2 read as raw", raw.Formats);
    }
}
