// The live page rendered by headless Chromium while a coordinator serves it, checked in the screenshot's pixels and
// its DOM.
using Job;
using Coordinator.Protocol;
using Coordinator.UnitTests;
using SkiaSharp;
using Xunit.Abstractions;
using static Coordinator.UnitTests.LivePageMetrics;

namespace OecRun.FunctionalTests;

[Collection("metrics")]
public class LivePageChromiumTests(ITestOutputHelper output)
{
    // The page's series colours (Live/live.html: RANK_COLORS[0], RANK_COLORS[1], VAL_COLOR).
    static readonly SKColor Rank0 = SKColor.Parse("#1f77b4"), Rank1 = SKColor.Parse("#d62728"), Val = SKColor.Parse("#ff7f0e");
    // ROLLBACK_COLOR: the steps a rollback undid and the marker at the step the job went back to.
    static readonly SKColor RolledBack = SKColor.Parse("#7f7f7f");

    [Fact]
    public async Task Chromium_shows_the_header_and_every_chart_with_its_curves_while_a_job_runs()
    {
        // The NaN loss of step 30 must stay on the page: the divergence rules only warn here.
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { HeartbeatTimeoutS = 300 }, steps: Steps, divergence: new DivergenceOptions { Action = DivergenceAction.Warn });
        await grpc.Job.RegisterAll();
        for (int step = 1; step <= Steps; step++)
            foreach (int rank in new[] { 0, 1 })
            {
                var reply = await grpc.Client.HeartbeatAsync(Beat(rank, step, Metrics(rank, step)), GrpcJob.Call());
                Assert.Equal(Command.Continue, reply.Command);
            }
        using var dir = new TempDir();
        string png = Path.Combine(dir.Path, "live.png");

        await Chromium.Screenshot(grpc.Host.LivePageAddress, png);
        CopyForInspection(png, "live.png");
        var counts = CountColours(png);
        output.WriteLine($"{png}: {counts}");
        // 9 charts about 600 px wide; a 2 px curve across one leaves well over 600 pixels of its colour.
        Assert.True(counts.Rank0 > 9 * 400, $"rank 0's colour in {counts.Rank0} pixels, expected its curves in 9 charts: {png}");
        Assert.True(counts.Rank1 > 2 * 400, $"rank 1's colour in {counts.Rank1} pixels, expected its curves in the tokens/s and step time charts");
        Assert.True(counts.Val > 150, $"the validation loss colour in {counts.Val} pixels, expected its curve through steps 20, 40, 60");
        Assert.True(counts.Rank0Halves.Left > 4 * 400 && counts.Rank0Halves.Right > 4 * 400,
            $"rank 0's colour in {counts.Rank0Halves.Left} pixels of the left column of charts and {counts.Rank0Halves.Right} of the right");

        string dom = await Chromium.DumpDom(grpc.Host.LivePageAddress);
        Assert.Contains($"job {TestJob.JobId} · running · generation 1 · step {Steps} of {Steps} · ranks alive 2 of 2 · restarts 0 · " +
                        "divergence events 1 · rollbacks 0 · skipped sequences 0", dom); // the warning about step 30's NaN loss
        Assert.Equal(9, dom.Split("class=\"uplot").Length - 1);
    }

    [Fact]
    public async Task Chromium_draws_the_steps_a_rollback_undid_in_grey_with_a_marker_at_the_step_the_job_went_back_to()
    {
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { HeartbeatTimeoutS = 300 }, steps: Steps, divergence: new DivergenceOptions { Action = DivergenceAction.Warn });
        await grpc.Job.RegisterAll();
        for (int step = 1; step <= Steps; step++) await grpc.Client.HeartbeatAsync(Beat(0, step, Metrics(0, step)), GrpcJob.Call());
        using var dir = new TempDir();
        string before = Path.Combine(dir.Path, "before.png"), after = Path.Combine(dir.Path, "after.png");

        await Chromium.Screenshot(grpc.Host.LivePageAddress, before);
        grpc.Host.History.Truncate(40); // as a rollback to the checkpoint at step 40 does
        await Chromium.Screenshot(grpc.Host.LivePageAddress, after);
        CopyForInspection(after, "live-rolled-back.png");

        // 9 markers about 230 px tall, dashed, 2 px wide: over 150 pixels each; the dashed steps 41..60 add more.
        int added = Pixels(after, RolledBack) - Pixels(before, RolledBack);
        output.WriteLine($"{after}: {added} more pixels of the rolled-back colour than before the rollback");
        Assert.True(added > 9 * 150, $"the rollback added {added} pixels of the rolled-back colour, expected a marker in each of 9 charts");
        Assert.Contains("rolled back to 40", await Chromium.DumpDom(grpc.Host.LivePageAddress)); // the dashed series' legend
    }

    [Fact]
    public async Task The_mu_norm_chart_draws_float_noise_of_a_centered_mu_flat_on_zero_and_a_growing_mu_whole()
    {
        Assert.Equal("0 0.001", await MuNormRange(step => 1e-8 * (1 + step % 3))); // noise under mu-centering, not autoscaled
        string[] growing = (await MuNormRange(step => 0.01 * step)).Split(' ');       // an uncentered ||mu|| up to 0.6
        Assert.Equal("0", growing[0]);
        Assert.True(double.Parse(growing[1], System.Globalization.CultureInfo.InvariantCulture) >= 0.6, $"||mu|| chart's y range {string.Join(' ', growing)}");
    }

    /// <summary>The y range ("min max") the live page draws ||mu|| in after rank 0 reported `muNorm` of steps 1..60.</summary>
    static async Task<string> MuNormRange(Func<long, double> muNorm)
    {
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { HeartbeatTimeoutS = 300 }, steps: Steps, divergence: new DivergenceOptions { Action = DivergenceAction.Warn });
        await grpc.Job.RegisterAll();
        for (int step = 1; step <= Steps; step++)
        {
            var m = Metrics(0, step);
            m.MuNorm = muNorm(step);
            await grpc.Client.HeartbeatAsync(Beat(0, step, m), GrpcJob.Call());
        }
        string dom = await Chromium.DumpDom(grpc.Host.LivePageAddress);
        var chart = System.Text.RegularExpressions.Regex.Match(dom, "data-y-range=\"([^\"]*)\"><h2>\\|\\|mu\\|\\|");
        Assert.True(chart.Success, $"no ||mu|| chart with a y range in:\n{dom}");
        return chart.Groups[1].Value;
    }

    [Fact]
    public async Task Chromium_shows_no_curve_before_any_rank_reported_metrics()
    {
        await using var grpc = await GrpcJob.StartAsync(new JobOptions { HeartbeatTimeoutS = 300 }, steps: Steps);
        await grpc.Job.RegisterAll();
        using var dir = new TempDir();
        string png = Path.Combine(dir.Path, "empty.png");

        await Chromium.Screenshot(grpc.Host.LivePageAddress, png);
        CopyForInspection(png, "live-empty.png");
        var counts = CountColours(png);
        output.WriteLine($"{png}: {counts}");
        Assert.True(counts is { Rank0: 0, Rank1: 0, Val: 0 }, $"series colours without metrics: rank 0 {counts.Rank0}, rank 1 {counts.Rank1}, val {counts.Val} pixels");
    }

    /// <summary>Pixels within 30 per channel of each series colour: the curves' cores, not their antialiased edges nor
    /// the half-opacity legend markers.</summary>
    static (int Rank0, int Rank1, int Val, (int Left, int Right) Rank0Halves) CountColours(string png)
    {
        using var bitmap = SKBitmap.Decode(png) ?? throw new Xunit.Sdk.XunitException($"{png} is not a PNG");
        Assert.Equal((1280, 1600), (bitmap.Width, bitmap.Height));
        static bool Near(SKColor a, SKColor b) => Math.Abs(a.Red - b.Red) <= 30 && Math.Abs(a.Green - b.Green) <= 30 && Math.Abs(a.Blue - b.Blue) <= 30;
        int rank0 = 0, rank1 = 0, val = 0, left = 0;
        for (int y = 0; y < bitmap.Height; y++)
            for (int x = 0; x < bitmap.Width; x++)
            {
                var c = bitmap.GetPixel(x, y);
                if (Near(c, Rank0)) { rank0++; if (x < bitmap.Width / 2) left++; }
                else if (Near(c, Rank1)) rank1++;
                else if (Near(c, Val)) val++;
            }
        return (rank0, rank1, val, (left, rank0 - left));
    }

    /// <summary>Pixels within 30 per channel of `color`.</summary>
    static int Pixels(string png, SKColor color)
    {
        using var bitmap = SKBitmap.Decode(png) ?? throw new Xunit.Sdk.XunitException($"{png} is not a PNG");
        return bitmap.Pixels.Count(c => Math.Abs(c.Red - color.Red) <= 30 && Math.Abs(c.Green - color.Green) <= 30 && Math.Abs(c.Blue - color.Blue) <= 30);
    }

    /// <summary>Keeps a copy of the screenshot next to the test results (bin/.../live-page/) for a person to look at.</summary>
    static void CopyForInspection(string png, string name)
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "live-page");
        Directory.CreateDirectory(dir);
        File.Copy(png, Path.Combine(dir, name), overwrite: true);
    }
}
