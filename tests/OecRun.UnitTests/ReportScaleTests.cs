// `oecrun report --log-y` and `--y-range`: a run whose loss explodes no longer flattens a steady run's curve, checked in
// how many pixel rows of the chart the steady run's colour covers.
using Job;
using OecRun.Reporting;
using Rank.Training;
using SkiaSharp;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class ReportScaleTests
{
    const int Height = 480;

    /// <summary>A 50-step log whose train loss (and val loss every 10 steps) is `loss(step)`.</summary>
    static string WriteRun(string dir, Func<int, double> loss)
    {
        Directory.CreateDirectory(dir);
        using var log = new MetricsLog(Path.Combine(dir, "metrics.jsonl"));
        for (int step = 1; step <= 50; step++)
            log.Write(new StepMetrics(step, loss(step), step % 10 == 0 ? loss(step) : null, 3e-3, 1, 1e4, 0.05, 0.5, 0, 2, 10, 6, 0.9));
        return dir;
    }

    /// <summary>Pixel rows of loss.png in which run 0's colour appears left of the legend (which is on the right): how
    /// tall its curve is drawn.</summary>
    static int SteadyRows(TempDirectory temp, string name, params string[] options)
    {
        string steady = WriteRun(temp.File("steady"), s => 3 + 3 * Math.Exp(-s / 10.0)); // 5.7 down to 3.0
        string exploding = WriteRun(temp.File("exploding"), s => 3 + Math.Exp(s / 4.0));  // up to 2.7e5
        string outDir = temp.File(name);
        var (code, _, error) = Invoke(["report", steady, exploding, "--out", outDir, "--width", "640", "--height", $"{Height}", .. options]);
        Assert.True(code == 0, error);
        using var bitmap = SKBitmap.Decode(Path.Combine(outDir, "loss.png"));
        var color = MetricsReport.RunColor(0);
        return Enumerable.Range(0, bitmap.Height).Count(y => Enumerable.Range(0, bitmap.Width * 6 / 10).Any(x =>
        {
            var p = bitmap.GetPixel(x, y);
            return Math.Abs(p.Red - color.R) + Math.Abs(p.Green - color.G) + Math.Abs(p.Blue - color.B) <= 24;
        }));
    }

    [Fact]
    public void A_clipped_y_range_and_a_log_axis_each_draw_the_steady_run_taller_than_the_linear_autoscaled_chart()
    {
        using var temp = new TempDirectory();

        int linear = SteadyRows(temp, "linear");
        int clipped = SteadyRows(temp, "clipped", "--y-range", "loss=2:7");
        int log = SteadyRows(temp, "log", "--log-y");

        Assert.True(clipped > Height / 4, $"clipped to 2..7 the steady run covers {clipped} rows of {Height}");
        Assert.True(log > 3 * linear, $"on a log axis the steady run covers {log} rows, autoscaled linearly {linear}");
        Assert.True(clipped > 3 * linear, $"clipped {clipped} rows, autoscaled linearly {linear}");
    }

    [Fact]
    public void A_log_axis_leaves_out_the_values_that_are_not_positive_and_counts_them()
    {
        var series = new Series("train_loss", [1, 2, 3, 4], [100, 0, 0.1, -1], Dropped: 1);

        var onAxis = new ChartScale(LogY: true).OnAxis(series, new MetricsReport.Line("train", "train_loss", m => m.TrainLoss));

        Assert.Equal([1, 3], onAxis.Steps);
        Assert.Equal([2, -1], onAxis.Values);
        Assert.Equal(3, onAxis.Dropped);
        Assert.Same(series, new ChartScale(LogY: true).OnAxis(series, new MetricsReport.Line("mean", "mean_logit", m => m.MeanLogit, RightAxis: true)));
    }

    [Theory]
    [InlineData("loss", "'loss': expected CHART=MIN:MAX")]
    [InlineData("speed=1:2", "'speed=1:2': expected CHART=MIN:MAX with MIN < MAX and CHART one of loss, mu_norm, logits")]
    [InlineData("loss=6:2", "'loss=6:2': expected CHART=MIN:MAX with MIN < MAX")]
    [InlineData("loss=a:2", "'loss=a:2'")]
    public void A_bad_y_range_exits_with_2_naming_it(string range, string expected)
    {
        using var temp = new TempDirectory();
        string run = WriteRun(temp.File("run"), s => 3);

        var (code, _, error) = Invoke("report", run, "--out", temp.File("out"), "--y-range", range);

        Assert.Equal(2, code);
        Assert.Contains($"report --y-range: {expected}", error);
        Assert.False(Directory.Exists(temp.File("out")) && Directory.EnumerateFiles(temp.File("out")).Any(), "no chart written");
    }

    [Fact]
    public void A_log_axis_refuses_a_range_that_reaches_zero()
    {
        using var temp = new TempDirectory();
        string run = WriteRun(temp.File("run"), s => 3);

        var (code, _, error) = Invoke("report", run, "--out", temp.File("out"), "--log-y", "--y-range", "loss=0:6");

        Assert.Equal(2, code);
        Assert.Contains("report --y-range: 'loss=0:6': the log axis (--log-y) needs MIN > 0", error);
    }
}
