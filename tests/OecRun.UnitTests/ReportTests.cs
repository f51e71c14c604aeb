using Job;
using OecRun.Reporting;
using Rank.Training;
using SkiaSharp;

namespace OecRun.UnitTests;

public class ReportTests
{
    /// <summary>Writes a 50-step log through MetricsLog itself (so NaN and infinity are spelled as training writes them):
    /// val_loss every 10 steps; `diverging` makes max |logit| grow exponentially and logs one NaN train loss (step 30)
    /// and one infinite mean logit (step 40).</summary>
    internal static string WriteRun(string dir, bool diverging)
    {
        string path = Path.Combine(dir, "metrics.jsonl");
        using var log = new MetricsLog(path);
        for (int step = 1; step <= 50; step++) log.Write(Logged(step, diverging));
        return dir;
    }

    static StepMetrics Logged(int step, bool diverging)
    {
        double loss = diverging && step == 30 ? double.NaN : (diverging ? 3.5 : 3) + 3 * Math.Exp(-step / 10.0);
        double meanLogit = diverging && step == 40 ? double.PositiveInfinity : (diverging ? 0.02 : -0.01) * step;
        double maxLogit = diverging ? 5 * Math.Exp(step / 8.0) : 10 + 0.1 * step;
        double muNorm = diverging ? 1e-3 * step * step : 0.5 + 0.01 * step;
        return new StepMetrics(step, loss, step % 10 == 0 ? loss + 0.1 : null, 3e-3, 1.0, 1e4, 0.05, muNorm, meanLogit, 2.0, maxLogit, 6.2, 0.9);
    }

    static (string A, string B) TwoRuns(TempDirectory temp) =>
        (WriteRun(Directory.CreateDirectory(temp.File("steady")).FullName, diverging: false),
         WriteRun(Directory.CreateDirectory(temp.File("diverging")).FullName, diverging: true));

    /// <summary>Pixels of the bitmap within 24 per channel of `color`: the lines' antialiased edges differ, their cores do not.</summary>
    static int PixelsOf(SKBitmap bitmap, ScottPlot.Color color) =>
        bitmap.Pixels.Count(p => Math.Abs(p.Red - color.R) + Math.Abs(p.Green - color.G) + Math.Abs(p.Blue - color.B) <= 24);

    [Fact]
    public void Report_writes_the_three_charts_at_the_requested_size_with_both_runs_drawn()
    {
        using var temp = new TempDirectory();
        var (a, b) = TwoRuns(temp);
        string outDir = temp.File("report");

        var written = MetricsReport.Write([a, b], outDir, 640, 480, TextWriter.Null);

        Assert.Equal(new[] { "loss.png", "mu_norm.png", "logits.png" }.Select(f => Path.Combine(outDir, f)), written);
        Assert.Empty(Directory.GetFiles(outDir, "*.tmp", SearchOption.AllDirectories));
        foreach (string png in written)
        {
            using var bitmap = SKBitmap.Decode(png);
            Assert.NotNull(bitmap);
            Assert.Equal((640, 480), (bitmap.Width, bitmap.Height));
            var background = bitmap.GetPixel(0, 0);
            double drawn = bitmap.Pixels.Count(p => p != background) / (double)bitmap.Pixels.Length;
            Assert.True(drawn > 0.05, $"{png}: only {drawn:P1} of the pixels differ from the background");
            Assert.True(bitmap.Pixels.Distinct().Count() > 50, $"{png}: too few distinct colours for lines, text and a legend");
            // The legend's swatches alone are under 70 pixels; each run's lines here cover 450 to 950.
            for (int r = 0; r < 2; r++)
            {
                int pixels = PixelsOf(bitmap, MetricsReport.RunColor(r));
                Assert.True(pixels > 250, $"{png}: run {r}'s colour covers only {pixels} pixels");
            }
        }
    }

    [Fact]
    public void A_log_with_the_mechanism_measures_keeps_them_and_gets_the_identity_and_ratio_charts()
    {
        using var temp = new TempDirectory();
        string dir = Directory.CreateDirectory(temp.File("measured")).FullName;
        using (var log = new MetricsLog(Path.Combine(dir, "metrics.jsonl")))
            for (int step = 1; step <= 50; step++)
                log.Write(Logged(step, diverging: false) with { MeanMuDotH = -0.01 * step, MaxMeanLogitGap = 1e-3, REmbMean = 1 - 0.01 * step, REmbMin = 0.5 - 0.005 * step });
        string outDir = temp.File("report");

        var run = RunMetrics.Read(dir);
        var written = MetricsReport.Write([dir], outDir, 640, 480, TextWriter.Null);

        Assert.Equal((-0.2, 1e-3, 0.8, 0.4), (run.Steps[19].MeanMuDotH, run.Steps[19].MaxMeanLogitGap, run.Steps[19].REmbMean, run.Steps[19].REmbMin));
        Assert.Equal(new[] { "loss.png", "mu_norm.png", "logits.png", "identity.png", "ratios.png" }.Select(f => Path.Combine(outDir, f)), written);
        foreach (string png in written.Skip(3))
        {
            using var bitmap = SKBitmap.Decode(png);
            int pixels = PixelsOf(bitmap, MetricsReport.RunColor(0));
            Assert.True(pixels > 250, $"{png}: the run's colour covers only {pixels} pixels");
        }
        Assert.DoesNotContain("mu_dot_h", File.ReadLines(Path.Combine(WriteRun(Directory.CreateDirectory(temp.File("plain")).FullName, false), "metrics.jsonl")).First());
    }

    [Fact]
    public void Report_defaults_to_the_first_runs_directory_and_counts_the_non_finite_values_it_leaves_out()
    {
        using var temp = new TempDirectory();
        var (a, b) = TwoRuns(temp);
        var console = new StringWriter();

        var written = MetricsReport.Write([Path.Combine(a, "metrics.jsonl"), b], null, 300, 200, console);

        Assert.All(written, p => Assert.Equal(a, Path.GetDirectoryName(p)));
        string[] lines = console.ToString().Trim().Split('\n');
        Assert.StartsWith("steady: 50 logged steps", lines[0]);
        Assert.DoesNotContain("non-finite", lines[0]);
        Assert.StartsWith("diverging: 50 logged steps", lines[1]);
        Assert.EndsWith("non-finite values left out: train_loss 1, val_loss 1, mean_logit 1", lines[1].TrimEnd());
    }

    [Fact]
    public void Steps_a_rollback_undid_are_left_out_of_the_curve_and_drawn_apart_with_a_marker_where_the_run_went_back_to()
    {
        using var temp = new TempDirectory();
        string plain = WriteRun(Directory.CreateDirectory(temp.File("plain")).FullName, diverging: false);
        string rolled = WriteRun(Directory.CreateDirectory(temp.File("rolled")).FullName, diverging: false);
        using (var again = new MetricsLog(Path.Combine(rolled, "metrics.jsonl"), keepThrough: 20))
            for (int step = 21; step <= 50; step++) again.Write(Logged(step, diverging: false)); // the same curve again
        var console = new StringWriter();

        var run = RunMetrics.Read(rolled);
        MetricsReport.Write([plain], temp.File("plain-report"), 640, 480, TextWriter.Null);
        MetricsReport.Write([rolled], temp.File("rolled-report"), 640, 480, console);

        Assert.Equal(Enumerable.Range(1, 50), run.Steps.Select(m => m.Step));
        Assert.Equal(Enumerable.Range(21, 30), Assert.Single(run.RolledBack).Select(m => m.Step));
        Assert.StartsWith("rolled: 50 logged steps", console.ToString());
        Assert.Contains("; 30 rolled-back steps drawn dotted (went back to step 20)", console.ToString());
        foreach (string chart in new[] { "loss.png", "mu_norm.png", "logits.png" })
        {
            using var before = SKBitmap.Decode(Path.Combine(temp.File("plain-report"), chart));
            using var after = SKBitmap.Decode(Path.Combine(temp.File("rolled-report"), chart));
            var (curve, marker) = (TallestColumn(before, MetricsReport.RunColor(0)), TallestColumn(after, MetricsReport.RunColor(0)));
            Assert.True(marker > 100 && curve < 50, $"{chart}: the run's colour fills at most {curve} pixels of a column without the rollback and {marker} with it");
        }
    }

    /// <summary>The most pixels of `color` in one column of the bitmap: a vertical line's, where there is one.</summary>
    static int TallestColumn(SKBitmap bitmap, ScottPlot.Color color) =>
        Enumerable.Range(0, bitmap.Width).Max(x => Enumerable.Range(0, bitmap.Height).Count(y =>
        {
            var p = bitmap.GetPixel(x, y);
            return Math.Abs(p.Red - color.R) + Math.Abs(p.Green - color.G) + Math.Abs(p.Blue - color.B) <= 24;
        }));

    [Fact]
    public void Reading_a_log_keeps_NaN_and_infinity_and_a_series_drops_them_and_skips_steps_without_the_field()
    {
        using var temp = new TempDirectory();
        var run = RunMetrics.Read(WriteRun(Directory.CreateDirectory(temp.File("diverging")).FullName, diverging: true));

        Assert.Equal("diverging", run.Name);
        Assert.Equal(50, run.Steps.Count);
        Assert.True(double.IsNaN(run.Steps[29].TrainLoss));
        Assert.Equal(double.PositiveInfinity, run.Steps[39].MeanLogit);
        var train = run.Points("train_loss", m => m.TrainLoss);
        Assert.Equal((49, 1), (train.Steps.Length, train.Dropped));
        Assert.DoesNotContain(30.0, train.Steps);
        var val = run.Points("val_loss", m => m.ValLoss);
        Assert.Equal(new double[] { 10, 20, 40, 50 }, val.Steps); // step 30's val loss is NaN too
        Assert.Equal(1, val.Dropped);
    }

    [Fact]
    public void A_malformed_line_is_an_error_naming_the_file_and_the_line()
    {
        using var temp = new TempDirectory();
        string log = Path.Combine(WriteRun(Directory.CreateDirectory(temp.File("run")).FullName, diverging: false), "metrics.jsonl");
        var lines = File.ReadAllLines(log);
        lines[2] = lines[2][..20]; // a line cut short, as by a crash mid-write
        File.WriteAllLines(log, lines);

        var e = Assert.Throws<Data.DataFormatException>(() => MetricsReport.Write([log], temp.File("out"), 300, 200, TextWriter.Null));

        Assert.StartsWith($"{log} line 3: not a metrics record", e.Message);
        Assert.False(Directory.Exists(temp.File("out")));
    }

    [Fact]
    public void A_line_missing_a_field_is_an_error_naming_the_field()
    {
        using var temp = new TempDirectory();
        string log = temp.File("metrics.jsonl");
        File.WriteAllText(log, "{\"step\": 1, \"train_loss\": 4.2}\n");

        var e = Assert.Throws<Data.DataFormatException>(() => RunMetrics.Read(log));

        Assert.StartsWith($"{log} line 1:", e.Message);
        Assert.Contains("learning_rate", e.Message);
    }

    [Fact]
    public void A_missing_or_empty_log_is_an_error_naming_the_file()
    {
        using var temp = new TempDirectory();
        string missing = Path.Combine(temp.Path, "metrics.jsonl");

        var absent = Assert.Throws<ArgumentException>(() => RunMetrics.Read(temp.Path));
        File.WriteAllText(missing, "");
        var empty = Assert.Throws<Data.DataFormatException>(() => RunMetrics.Read(temp.Path));

        Assert.Contains($"no metrics log at {missing}", absent.Message);
        Assert.Equal($"{missing}: the metrics log is empty (no logged steps)", empty.Message);
    }

    [Fact]
    public void A_size_outside_the_limits_is_an_error_naming_the_option_and_the_value()
    {
        using var temp = new TempDirectory();
        var (a, _) = TwoRuns(temp);

        var e = Assert.Throws<ArgumentException>(() => MetricsReport.Write([a], null, 0, 800, TextWriter.Null));

        Assert.Contains("--width: 0 pixels", e.Message);
    }
}
