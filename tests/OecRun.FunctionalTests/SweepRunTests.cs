// `oecrun sweep` end to end on a tiny grid: real jobs per cell, the table and the LRS against the cells' own files,
// resuming after a stop and after a lost result.
using Job;
using System.Globalization;
using Oec;
using Rank.Configuration;
using OecRun.Launching;
using OecRun.Sweep;
using Rank.Training;
using SkiaSharp;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public class SweepRunTests(ITestOutputHelper output)
{
    /// <summary>A few steps of the tiny model on 8 x 32 tokens. Without clipping or warmup, a peak learning rate of 1000
    /// makes the loss non-finite within a few steps, so that cell's job exits 3 (diverged); 1e-3 trains.</summary>
    static readonly string[] Small =
    [
        "train.steps=12", "train.warmup_steps=0", "train.grad_clip=0", "train.batch_size=8", "train.sequence_length=32",
        "train.eval_every=6", "train.eval_batches=2", "train.log_every=3", "data.synthetic_tokens=30000",
    ];

    static SweepOptions Options(string outDir, string methods, string rates, params string[] extra) => new()
    {
        Methods = SweepOptions.ParseMethods(methods), Tying = [false], LearningRates = SweepOptions.ParseRates(rates),
        Presets = ["tiny"], Parallel = 2, OutDir = outDir, Overrides = [.. Small, .. extra],
    };

    async Task<(int Exit, string Console)> Run(SweepOptions options, CancellationToken interrupt = default, Action<string>? onLine = null)
    {
        var console = new LineWriter(onLine);
        int exit = await SweepRun.Run(options, Launch.SelfRankCommand(), TextWriter.Synchronized(console), interrupt).WaitAsync(TimeSpan.FromMinutes(3));
        output.WriteLine(console.ToString());
        return (exit, console.ToString());
    }

    /// <summary>The numbers of one table row, by column header: the sweep's table for `group`, row `method`.</summary>
    static Dictionary<string, string> Row(string markdown, string group, string method)
    {
        var lines = markdown.Split('\n').SkipWhile(l => !l.StartsWith($"## {group}:")).Skip(1).SkipWhile(l => !l.StartsWith("| method |")).ToList();
        string[] Cells(string line) => line.Trim().Trim('|').Split('|').Select(c => c.Trim()).ToArray();
        var header = Cells(lines[0]);
        var row = Cells(lines.First(l => l.StartsWith($"| {method} |")));
        return header.Zip(row).ToDictionary(p => p.First, p => p.Second);
    }

    static double Number(string text) => double.Parse(text.TrimEnd('%').Replace("†", "").Trim(), CultureInfo.InvariantCulture);

    [Fact]
    public async Task A_two_by_two_sweep_reports_the_cells_own_losses_L0_the_LRS_and_the_overhead()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("sweep");

        var (exit, console) = await Run(Options(outDir, "none,mu_loss", "1e-3,1000"));

        Assert.Equal(0, exit);
        string markdown = File.ReadAllText(Path.Combine(outDir, SweepReport.FileName));
        Assert.Contains(SweepReport.DivergenceRule, markdown);
        var initial = InitialLoss.Read(Path.Combine(outDir, "initial", "tiny-untied.json"));

        // L0 is the untrained model's validation loss: measured again here from a cell's own configuration.
        var cellConfig = RunConfig.FromJson(File.ReadAllText(Path.Combine(outDir, "cells", "tiny-untied-none-lr1e-3", "config.json")));
        using (var untrained = new Trainer(cellConfig)) Assert.Equal(untrained.Evaluate(), initial.ValLoss, 1e-5);
        Assert.Contains($"## tiny, untied: L0 = {initial.ValLoss:F4}", markdown);

        var stepSeconds = new Dictionary<string, double>();
        foreach (string method in new[] { "none", "mu_loss" })
        {
            var row = Row(markdown, "tiny, untied", method);
            var losses = new List<double>();
            foreach (var (rate, column) in new[] { ("1e-3", "1e-3"), ("1000", "1e3") })
            {
                string dir = Path.Combine(outDir, "cells", $"tiny-untied-{method}-lr{column}");
                var config = RunConfig.FromJson(File.ReadAllText(Path.Combine(dir, "config.json")));
                Assert.Equal((SweepOptions.ParseMethods(method)[0], double.Parse(rate, CultureInfo.InvariantCulture)), (config.Oec.Method, config.Train.LearningRate));
                Assert.Equal((1, DivergenceAction.Warn), (config.Job.WorldSize, config.Divergence.Action));
                var steps = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl"));
                var result = CellResult.Read(Path.Combine(dir, CellResult.FileName));
                if (rate == "1000")
                {
                    // Diverged: the job stopped on a non-finite loss (exit 3), recorded as such, not as a failure.
                    Assert.Equal(3, result.ExitCode);
                    Assert.False(double.IsFinite(steps[^1].TrainLoss));
                    Assert.Equal("NaN †", row[column]);
                    losses.Add(double.NaN);
                }
                else
                {
                    Assert.Equal((0, 12), (result.ExitCode, steps[^1].Step));
                    double val = steps[^1].ValLoss!.Value;
                    Assert.Equal(val, Number(row[column]), tolerance: 5e-5);
                    Assert.DoesNotContain("†", row[column]);
                    Assert.Equal((steps[^1].MuNorm, steps[^1].MaxAbsLogit), (result.MuNorm, result.MaxAbsLogit));
                    losses.Add(val);
                }
                var intervals = steps.Skip(1).Select((s, i) => (s.StepSeconds, Steps: s.Step - steps[i].Step)).ToList(); // each row: the steps since the one before
                stepSeconds[$"{method}/{rate}"] = intervals.Sum(t => t.StepSeconds * t.Steps) / intervals.Sum(t => t.Steps);
                Assert.Equal(stepSeconds[$"{method}/{rate}"], result.StepSeconds, 12);
            }
            // LRS by hand: cap at L0 (a non-finite loss counts as L0), subtract the best, sum, divide by N - 1 = 1.
            var capped = losses.Select(l => double.IsFinite(l) ? Math.Min(l, initial.ValLoss) : initial.ValLoss).ToList();
            Assert.Equal(capped.Sum(l => l - capped.Min()), Number(row["LRS"]), tolerance: 5e-5);
        }
        double overhead = (stepSeconds["mu_loss/1e-3"] + stepSeconds["mu_loss/1000"]) / (stepSeconds["none/1e-3"] + stepSeconds["none/1000"]) - 1;
        Assert.Equal(overhead * 100, Number(Row(markdown, "tiny, untied", "mu_loss")["overhead"]), tolerance: 0.051);
        Assert.Equal("+0.0%", Row(markdown, "tiny, untied", "none")["overhead"]);

        foreach (string chart in new[] { "loss_vs_lr", "mu_norm_vs_lr", "mean_logit_vs_lr", "max_abs_logit_vs_lr" })
        {
            using var bitmap = SKBitmap.Decode(Path.Combine(outDir, $"{chart}_tiny_untied.png"));
            Assert.Equal((1200, 800), (bitmap.Width, bitmap.Height));
            // Each method's line (loss: two points, the diverged one capped at L0) or marker in the method's colour.
            foreach (var method in new[] { OecMethod.None, OecMethod.MuLoss })
                Assert.True(PixelsOf(bitmap, OecRun.Reporting.MetricsReport.RunColor((int)method)) > (chart == "loss_vs_lr" ? 250 : 20), $"{chart}: {method} not drawn");
        }
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp", SearchOption.AllDirectories));
        Assert.Contains("4 cells in", console);
    }

    /// <summary>Pixels within 24 per channel of `color` (antialiased edges differ, line cores do not).</summary>
    static int PixelsOf(SKBitmap bitmap, ScottPlot.Color color) =>
        bitmap.Pixels.Count(p => Math.Abs(p.Red - color.R) + Math.Abs(p.Green - color.G) + Math.Abs(p.Blue - color.B) <= 24);

    [Fact]
    public async Task A_stopped_sweep_resumes_with_the_rest_and_a_cell_without_its_result_runs_again_alone()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("sweep");
        var options = Options(outDir, "none", "1e-3,3e-3") with { Parallel = 1 };
        string first = Path.Combine(outDir, "cells", "tiny-untied-none-lr1e-3"), second = Path.Combine(outDir, "cells", "tiny-untied-none-lr3e-3");

        // Interrupted once the first cell finished: the second never starts; the report holds the first.
        using var interrupt = new CancellationTokenSource();
        var (exit1, console1) = await Run(options, interrupt.Token, line => { if (line.Contains("[1/2]")) interrupt.Cancel(); });
        Assert.Equal(0, exit1);
        Assert.Contains("stopped: 1 of 2 cells finished", console1);
        Assert.True(File.Exists(Path.Combine(first, CellResult.FileName)));
        Assert.False(Directory.Exists(second));
        Assert.Contains("1 cells of 2 (the sweep was stopped", File.ReadAllText(Path.Combine(outDir, SweepReport.FileName))); // the cells so far
        byte[] firstResult = File.ReadAllBytes(Path.Combine(first, CellResult.FileName));

        var (exit2, console2) = await Run(options);
        Assert.Equal(0, exit2);
        Assert.Contains("1 finished earlier, 1 to run", console2);
        Assert.DoesNotContain("tiny-untied-none-lr1e-3: started", console2);
        Assert.Contains("tiny-untied-none-lr3e-3: started", console2);
        Assert.Equal(firstResult, File.ReadAllBytes(Path.Combine(first, CellResult.FileName)));
        Assert.True(File.Exists(Path.Combine(outDir, SweepReport.FileName)));

        // A cell directory without its result and without a checkpoint is half-done: deleted, run afresh, and only it.
        byte[] secondResult = File.ReadAllBytes(Path.Combine(second, CellResult.FileName));
        File.Delete(Path.Combine(first, CellResult.FileName));
        var (exit3, console3) = await Run(options);
        Assert.Equal(0, exit3);
        Assert.Contains("1 finished earlier, 1 to run", console3);
        Assert.Contains("tiny-untied-none-lr1e-3: half-done (no result.json, no checkpoint); deleting", console3);
        Assert.DoesNotContain("tiny-untied-none-lr3e-3: started", console3);
        Assert.Equal(secondResult, File.ReadAllBytes(Path.Combine(second, CellResult.FileName)));
        Assert.True(CellResult.Read(Path.Combine(first, CellResult.FileName)).StartedUtc >
                    CellResult.Read(Path.Combine(second, CellResult.FileName)).FinishedUtc);

        // Another base configuration in the same directory is refused, naming the difference.
        var changed = options with { Overrides = [.. options.Overrides, "train.steps=13"] };
        var e = await Assert.ThrowsAsync<ArgumentException>(() => Run(changed));
        Assert.Contains("train.steps = 12 there, 13 now", e.Message);

        // A second sweep into a running one's directory is refused: it would take the running cells for half-done.
        using (RunDirectoryLock.Acquire(outDir))
        {
            var busy = await Assert.ThrowsAsync<InvalidOperationException>(() => Run(options));
            Assert.Contains($"run.out_dir = '{outDir}' is in use", busy.Message);
        }
    }

    /// <summary>Collects what is written and calls back with each whole line.</summary>
    sealed class LineWriter(Action<string>? onLine) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            onLine?.Invoke(value ?? "");
        }
    }
}
