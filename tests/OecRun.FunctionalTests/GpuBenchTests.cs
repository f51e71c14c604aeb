// bench-gpu's two halves at a toy size on the CPU: the PyTorch reference (under Debian's python3-torch) and oecrun.
using OecRun.Bench;

namespace OecRun.FunctionalTests;

public class GpuBenchTests(Xunit.Abstractions.ITestOutputHelper log)
{
    [Fact]
    public void On_the_CPU_both_frameworks_build_the_same_model_and_every_row_reports_its_speed_and_losses()
    {
        string python = TestPrograms.RequirePythonTorch(); // Debian's PyTorch 1.13: the twin's path without scaled_dot_product_attention
        var o = new GpuBenchOptions { Device = "cpu", Dim = 64, Layers = 2, Heads = 4, Vocab = 512, Sequence = 64, Batch = 4, Steps = 3, Warmup = 1, Modes = ["eager"], Python = python };
        var console = new StringWriter();

        var rows = GpuBench.Run(o, console);

        log.WriteLine(console.ToString());
        Assert.Equal(["pytorch", "oecrun", "oecrun"], rows.Select(r => r.Framework.Split(' ')[0]));
        Assert.Single(rows.Select(r => r.Parameters).Distinct());            // Run also refuses a mismatch
        Assert.Equal(196_992, rows[0].Parameters);                           // by hand from Gpt.cs: 2 x 512 x 64 + 2 x 65,696 + 64
        Assert.Single(rows.Select(r => r.FlopsPerToken).Distinct());
        Assert.All(rows, r => Assert.Equal(o.Warmup + o.Steps, r.Losses.Count));
        Assert.All(rows, r => Assert.InRange(r.Losses[0], Math.Log(512) - 0.5, Math.Log(512) + 0.5)); // an untrained model: about ln V
        Assert.All(rows, r => Assert.True(r.TokensPerSecond > 0 && r.Mfu is null && r.DeviceUsedBytes is null));
        Assert.Contains("| oecrun | bf16, oec.method = mu_centering, kernels off |", console.ToString());
        // each row also as soon as it was measured, before the table (which a time limit could cut off)
        var measured = console.ToString().Split('\n').Where(l => l.StartsWith("measured: ", StringComparison.Ordinal)).ToList();
        Assert.Equal(rows.Select(r => $"measured: {r.Framework}, {r.Mode}: "), measured.Select(l => l[..(l.IndexOf(": ", 10, StringComparison.Ordinal) + 2)]));
        Assert.True(console.ToString().IndexOf("measured: ", StringComparison.Ordinal) < console.ToString().IndexOf("| framework |", StringComparison.Ordinal));
        Assert.Matches(@"the optimizer step alone on cpu: TorchSharp's AdamW [0-9.]+ ms, FlatAdamW \(what oecrun runs\) [0-9.]+ ms", console.ToString());
    }

    [Theory]
    [InlineData(Oec.OecMethod.None)]
    [InlineData(Oec.OecMethod.MuCentering)]
    public void Oecruns_side_on_the_GPU_is_a_valid_one_rank_run_of_the_issues_model(Oec.OecMethod method)
    {
        var config = GpuBench.Config(new GpuBenchOptions(), method).Validated(); // the defaults: cuda, bf16, GPT-2 small

        Assert.Equal(1, config.Job.WorldSize); // one process on the GPU, not the job default of 2 ranks sharing it over tcp
        Assert.Equal(("cuda", Rank.Training.Precision.Bf16, method), (config.Train.Device, config.Train.Precision, config.Oec.Method));
        Assert.Equal((12, 768, 12, 50304, 1024, 16), (config.Model.NLayer, config.Model.DModel, config.Model.NHead, config.Data.VocabSize, config.Train.SequenceLength, config.Train.BatchSize));
    }
}
