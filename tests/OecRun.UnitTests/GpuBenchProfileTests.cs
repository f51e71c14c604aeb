// bench-gpu --profile at a toy size on the CPU: the oecrun rows and the step profile printed under the table, no PyTorch needed.
using OecRun.Bench;

namespace OecRun.UnitTests;

public class GpuBenchProfileTests(Xunit.Abstractions.ITestOutputHelper log)
{
    [Fact]
    public void With_profile_the_step_profile_follows_the_table_with_every_phase_the_backward_and_the_host_line()
    {
        var o = new GpuBenchOptions { Device = "cpu", Dim = 64, Layers = 2, Heads = 4, Vocab = 512, Sequence = 64, Batch = 4, Steps = 3, Warmup = 1, Modes = [], Profile = true };
        var console = new StringWriter();

        var rows = GpuBench.Run(o, console);

        string text = console.ToString();
        log.WriteLine(text);
        Assert.Equal(2, rows.Count);
        Assert.True(text.IndexOf("| oecrun | bf16, oec.method = mu_centering, kernels off |", StringComparison.Ordinal) < text.IndexOf("| phase | ms per step |", StringComparison.Ordinal));
        Assert.Contains("oecrun's step profile (oec.method = none, bf16; block 0 stands for each block): 3 steps, timed by a stopwatch", text);
        foreach (string phase in new[] { "inputs", "embedding", "block 0: attention", "block 0: MLP", "head and loss", "backward: head and loss", "gradient reduction", "clip", "optimizer", "centering" })
            Assert.Matches($@"\| {phase} \| [0-9.]+ \| [0-9.]+ ?% \|", text);
        Assert.Matches(@"backward, whole: [0-9.]+ ms per step", text);
        Assert.Matches(@"host: [0-9.]+ ms per step to issue it, device: [0-9.]+ ms per step .*; [0-9]+ tensors created per step", text);
    }
}
