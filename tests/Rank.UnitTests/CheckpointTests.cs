using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Rank.Configuration;
using Rank.Model;
using Rank.Training;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class CheckpointTests
{
    static Gpt Model(RunConfig config, long seed)
    {
        manual_seed(seed);
        return new Gpt(config.Model, config.Data.ResolvedVocabSize, config.Train.SequenceLength);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Save_then_Load_into_a_fresh_model_gives_identical_parameters(bool tying)
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path) with { Model = new ModelOptions { WeightTying = tying } };
        config = config.Validated();
        using var saved = Model(config, seed: 1);
        using var fresh = Model(config, seed: 2);
        Assert.True(Tensors.MaxParameterDifference(saved, fresh) > 0);
        string path = temp.File("model.safetensors");

        Checkpoint.Save(saved, config.ToJson(), path);
        Checkpoint.Load(fresh, path);

        Assert.Equal(0, Tensors.MaxParameterDifference(saved, fresh));
    }

    [Fact]
    public void ReadConfig_returns_the_saved_configuration()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["oec.method=mu_loss", "train.steps=33", "train.warmup_steps=3", "train.seed=9", "run.out_dir=" + temp.Path]);
        using var model = Model(config, seed: 1);
        string path = temp.File("model.safetensors");

        Checkpoint.Save(model, config.ToJson(), path);
        string json = Checkpoint.ReadConfig(path);

        Assert.Equal(config.ToJson(), json);
        Assert.Equal(config, JsonSerializer.Deserialize<RunConfig>(json, RunConfig.Json));
    }

    [Fact]
    public void Save_leaves_no_temporary_file()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path);
        using var model = Model(config, seed: 1);
        string path = temp.File("model.safetensors");

        Checkpoint.Save(model, config.ToJson(), path);
        Checkpoint.Save(model, config.ToJson(), path); // over an existing file

        Assert.Equal(["model.safetensors"], Directory.GetFiles(temp.Path).Select(Path.GetFileName));
    }

    [Fact]
    public void The_file_is_safetensors_with_every_parameter_and_pt_metadata()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path);
        using var model = Model(config, seed: 1);
        string path = temp.File("model.safetensors");

        Checkpoint.Save(model, config.ToJson(), path);

        byte[] file = File.ReadAllBytes(path);
        long headerLength = BitConverter.ToInt64(file, 0);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(file, 8, (int)headerLength))!.AsObject();
        Assert.Equal("pt", header["__metadata__"]!["format"]!.GetValue<string>());
        foreach (var (name, parameter) in model.named_parameters())
        {
            var entry = header[name];
            Assert.True(entry is not null, $"{name} is not in the safetensors header");
            Assert.Equal("F32", entry!["dtype"]!.GetValue<string>());
            Assert.Equal(parameter.shape, entry["shape"]!.AsArray().Select(n => n!.GetValue<long>()).ToArray());
            var offsets = entry["data_offsets"]!.AsArray().Select(n => n!.GetValue<long>()).ToArray();
            Assert.Equal(parameter.numel() * 4, offsets[1] - offsets[0]);
            Assert.True(8 + headerLength + offsets[1] <= file.Length);
        }
    }

    [Fact]
    public void ReadConfig_of_a_file_without_metadata_fails_naming_the_file()
    {
        using var temp = new TempDirectory();
        string path = temp.File("bare.safetensors");
        byte[] header = Encoding.UTF8.GetBytes("""{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""");
        using (var output = File.Create(path))
        {
            output.Write(BitConverter.GetBytes((long)header.Length));
            output.Write(header);
            output.Write(new byte[4]);
        }

        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.ReadConfig(path));

        Assert.Contains(path, e.Message);
    }
}
