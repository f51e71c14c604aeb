// MemoryBudget: the parameter count matches the model built, and a model larger than the machine is refused before any allocation.
using Rank.Configuration;
using Rank.Model;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public sealed class MemoryBudgetTests
{
    [Theory]
    [InlineData("tiny", false, 512)]
    [InlineData("small", true, 50257)]
    public void The_parameter_count_is_the_models(string preset, bool tying, int vocab)
    {
        var options = new ModelOptions { Preset = preset, WeightTying = tying };
        using var model = new Gpt(options, vocab, maxSequenceLength: 16);

        Assert.Equal(model.parameters().Sum(p => p.numel()), ModelShape.Of(options.Resolve(), vocab).Parameters);
    }

    [Fact]
    public void An_absurd_d_model_is_refused_naming_the_estimate_and_the_limit()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["model.d_model=1000000000", $"run.out_dir={temp.Path}"]);

        var e = Assert.Throws<ArgumentException>(() => MemoryBudget.Check(config, ranksHere: 2, (8L << 30, "MemAvailable in /proc/meminfo")));

        Assert.StartsWith("model.d_model = 1000000000, model.n_layer = 2: training needs at least ", e.Message);
        Assert.Contains("x 16 bytes", e.Message);
        Assert.Contains("x 2 rank(s)", e.Message);
        Assert.Contains("but 8 GiB is available (MemAvailable in /proc/meminfo)", e.Message);
    }

    [Fact]
    public void A_model_that_fits_passes_and_bf16_needs_two_bytes_more_a_parameter()
    {
        using var temp = new TempDirectory();
        var fp32 = RunConfig.Load(null, [$"run.out_dir={temp.Path}"]);
        var bf16 = RunConfig.Load(null, [$"run.out_dir={temp.Path}", "train.precision=bf16"]);
        double parameters = ModelShape.Of(fp32.Model, fp32.Data.ResolvedVocabSize).Parameters;

        MemoryBudget.Check(fp32, ranksHere: 2, ((long)(parameters * 32), "test"));

        Assert.Equal(parameters * 16, MemoryBudget.RankBytes(fp32));
        Assert.Equal(parameters * 18, MemoryBudget.RankBytes(bf16));
        Assert.Throws<ArgumentException>(() => MemoryBudget.Check(fp32, ranksHere: 2, ((long)(parameters * 32) - 1, "test")));
    }

    [Fact]
    public void The_machine_has_memory_for_the_default_run()
    {
        using var temp = new TempDirectory();

        MemoryBudget.Check(RunConfig.Load(null, [$"run.out_dir={temp.Path}"]), ranksHere: 2);
    }
}
