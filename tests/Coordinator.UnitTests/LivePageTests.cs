// The live page: MetricsHistory (order, replacement, bound, Truncate, JSON), its HTTP endpoints on the metrics port,
// and the page itself rendered by headless Chromium, checked in the screenshot's pixels.
using Job;
using System.Net;
using System.Text.Json;
using Coordinator.Protocol;
using StepMetrics = Coordinator.Protocol.StepMetrics;
using SkiaSharp;
using Xunit.Abstractions;

namespace Coordinator.UnitTests;

[Collection("metrics")]
public class LivePageTests(ITestOutputHelper output)
{
    // The page's series colours (Live/live.html: RANK_COLORS[0], RANK_COLORS[1], VAL_COLOR).
    static readonly SKColor Rank0 = SKColor.Parse("#1f77b4"), Rank1 = SKColor.Parse("#d62728"), Val = SKColor.Parse("#ff7f0e");
    const int Steps = 60;

    /// <summary>Curves that move: a falling loss, a warm-up and decay of the learning rate, ranks at different speeds.
    /// Step 30 of rank 0 has a NaN loss and an infinite max |logit|, which the JSON and the charts must survive.</summary>
    static StepMetrics Metrics(int rank, long step)
    {
        double s = step;
        var m = new StepMetrics
        {
            Step = step, TrainLoss = 1 + 4 * Math.Exp(-s / 20) + 0.1 * Math.Sin(s), LearningRate = 1e-3 * Math.Min(1, s / 10) * (1 - s / 80),
            GradNorm = 1 + 0.5 * Math.Sin(s / 5), TokensPerSecond = 1000 + 300 * rank + 100 * Math.Sin(s / 3), StepSeconds = 0.1 + 0.03 * rank + 0.02 * Math.Cos(s / 4),
            MuNorm = 0.5 * Math.Exp(-s / 15), MeanLogit = -0.2 - 0.01 * s, LogitStd = 1 + 0.01 * s, MaxAbsLogit = 5 + 0.1 * s, MeanLogZ = 6 - 0.02 * s, RLog = 0.7,
        };
        if (step % 20 == 0) m.ValLoss = m.TrainLoss + 0.2;
        if (rank == 0 && step == 30) (m.TrainLoss, m.MaxAbsLogit) = (double.NaN, double.PositiveInfinity);
        return m;
    }

    static HeartbeatRequest Beat(int rank, long step, params StepMetrics[] metrics) =>
        new() { JobId = TestJob.JobId, Generation = 1, Rank = rank, Step = step, Metrics = { metrics } };

    static JsonElement Json(MetricsHistory history, long since = -1)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer)) history.WriteJson(w, since);
        return JsonDocument.Parse(buffer.ToArray()).RootElement;
    }

    static long[] StepsOf(MetricsHistory history, int rank) => history.Points(rank).Select(p => (long)p.Step).ToArray();

    [Fact]
    public async Task The_history_keeps_each_ranks_reported_steps_in_order_once_and_a_rank_that_goes_back_replaces_the_steps_from_there()
    {
        using var job = new TestJob();
        using var history = new MetricsHistory(job.State);
        await job.RegisterAll();
        job.Service.Heartbeat(Beat(0, 3, Metrics(0, 1), Metrics(0, 2), Metrics(0, 3)), TestJob.Peer);
        job.Service.Heartbeat(Beat(1, 2, Metrics(1, 1), Metrics(1, 2)), TestJob.Peer);
        job.Service.Heartbeat(Beat(0, 4, Metrics(0, 3), Metrics(0, 4)), TestJob.Peer); // step 3 resent
        Assert.Equal([1, 2, 3, 4], StepsOf(history, 0));
        Assert.Equal([1, 2], StepsOf(history, 1));
        Assert.Equal(0, history.Epoch);
        Assert.Equal(Metrics(1, 2).TokensPerSecond, history.Points(1)[1].TokensPerSecond);

        // A restarted rank reports step 2 again, with other values: steps 2..4 of before are gone.
        history.Add(0, Metrics(0, 2).ToRecord() with { TrainLoss = 9.5 });
        Assert.Equal([1, 2], StepsOf(history, 0));
        Assert.Equal(9.5, history.Points(0)[1].TrainLoss);
        Assert.Equal(1, history.Epoch);
        Assert.Empty(history.Points(5));
    }

    [Fact]
    public void The_history_keeps_at_most_4096_points_per_rank_by_dropping_every_other_point_and_keeps_the_first_and_the_newest()
    {
        using var job = new TestJob();
        using var history = new MetricsHistory(job.State);
        const int reported = 8000;
        for (int step = 1; step <= reported; step++) history.Add(0, Metrics(0, step).ToRecord());
        history.Add(1, Metrics(1, 1).ToRecord());

        // Full at step 4096: step 4097 halves it to 2048 points; full again at 6144 (2048 + 2048 new): halved again.
        var steps = StepsOf(history, 0);
        Assert.Equal(2048 + (reported - 6144), steps.Length);
        Assert.Equal(2, history.Epoch);
        Assert.Equal(1, steps[0]);
        Assert.Equal(reported, steps[^1]);
        Assert.True(steps.Zip(steps.Skip(1)).All(p => p.First < p.Second), "steps out of order after thinning");
        Assert.Equal(4, steps[1] - steps[0]);   // halved twice
        Assert.Equal(1, steps[^1] - steps[^2]); // not halved yet
        Assert.Equal([1], StepsOf(history, 1));
    }

    [Fact]
    public void Truncate_drops_every_ranks_points_after_the_step()
    {
        using var job = new TestJob();
        using var history = new MetricsHistory(job.State);
        foreach (int step in new[] { 10, 20, 30, 40 }) history.Add(0, Metrics(0, step).ToRecord());
        foreach (int step in new[] { 10, 20, 30 }) history.Add(1, Metrics(1, step).ToRecord());

        history.Truncate(20);
        Assert.Equal([10, 20], StepsOf(history, 0));
        Assert.Equal([10, 20], StepsOf(history, 1));
        Assert.Equal(1, history.Epoch);
        history.Truncate(20); // nothing left to drop: the epoch stays
        Assert.Equal(1, history.Epoch);
        history.Add(0, Metrics(0, 30).ToRecord());
        Assert.Equal([10, 20, 30], StepsOf(history, 0));
    }

    [Fact]
    public void The_history_json_has_null_for_non_finite_values_and_a_missing_validation_loss()
    {
        using var job = new TestJob();
        using var history = new MetricsHistory(job.State);
        for (int step = 19; step <= 31; step++) history.Add(0, Metrics(0, step).ToRecord());

        var json = Json(history);
        Assert.Equal(TestJob.JobId, json.GetProperty("job_id").GetString());
        Assert.Equal("registering", json.GetProperty("phase").GetString());
        Assert.Equal(TestJob.Steps, json.GetProperty("steps").GetInt64());
        var rank0 = json.GetProperty("ranks")[0];
        double?[] Column(string name) => rank0.GetProperty(name).EnumerateArray().Select(v => v.ValueKind == JsonValueKind.Null ? (double?)null : v.GetDouble()).ToArray();
        var steps = rank0.GetProperty("step").EnumerateArray().Select(v => v.GetInt64()).ToArray();
        var loss = Column("train_loss");
        Assert.Equal(13, loss.Length);
        Assert.Null(loss[Array.IndexOf(steps, 30L)]);                 // NaN
        Assert.Null(Column("max_abs_logit")[Array.IndexOf(steps, 30L)]); // +Infinity
        Assert.Equal(Metrics(0, 29).TrainLoss, loss[Array.IndexOf(steps, 29L)]);
        var val = Column("val_loss");
        Assert.Equal(Metrics(0, 20).ValLoss, val[Array.IndexOf(steps, 20L)]);
        Assert.Equal(12, val.Count(v => v is null));

        var since = Json(history, since: 29).GetProperty("ranks")[0].GetProperty("step").EnumerateArray().Select(v => v.GetInt64());
        Assert.Equal([30, 31], since);
    }

    [Fact]
    public async Task The_metrics_port_serves_the_page_its_assets_and_the_history_to_GET_only_and_the_gRPC_port_does_not()
    {
        await using var grpc = await GrpcJob.StartAsync(steps: Steps);
        await grpc.Job.RegisterAll();
        for (int step = 1; step <= 5; step++)
            grpc.Job.Service.Heartbeat(Beat(0, step, Metrics(0, step)), TestJob.Peer);
        var page = grpc.Host.LivePageAddress;
        Assert.Equal(new Uri(grpc.Host.MetricsAddress, "/live"), page);
        Assert.Contains($"live page at {page}", grpc.Job.LogText());
        using var http = new HttpClient(new SocketsHttpHandler { AllowAutoRedirect = false }) { Timeout = Waits.Timeout };

        using var root = await http.GetAsync(new Uri(page, "/")).Within();
        Assert.Equal(HttpStatusCode.Redirect, root.StatusCode);
        Assert.Equal("/live", root.Headers.Location?.ToString());
        using var html = await http.GetAsync(page).Within();
        Assert.Equal("text/html", html.Content.Headers.ContentType?.MediaType);
        Assert.Contains("<script src=\"/live/uPlot.iife.min.js\">", await html.Content.ReadAsStringAsync());
        foreach (var (asset, type) in new[] { ("uPlot.iife.min.js", "text/javascript"), ("uPlot.min.css", "text/css"), ("uPlot.LICENSE", "text/plain") })
        {
            using var reply = await http.GetAsync(new Uri(page, $"/live/{asset}")).Within();
            Assert.Equal(HttpStatusCode.OK, reply.StatusCode);
            Assert.Equal(type, reply.Content.Headers.ContentType?.MediaType);
            Assert.True((await reply.Content.ReadAsByteArrayAsync()).Length > 1000, $"{asset} is nearly empty");
        }

        var history = JsonDocument.Parse(await http.GetStringAsync(new Uri(page, "/live/history.json")).Within()).RootElement;
        Assert.Equal("running", history.GetProperty("phase").GetString());
        Assert.Equal(5, history.GetProperty("step").GetInt64());
        Assert.Equal(2, history.GetProperty("ranks_alive").GetInt32());
        var rank0 = history.GetProperty("ranks")[0];
        Assert.Equal(0, rank0.GetProperty("rank").GetInt32());
        Assert.Equal([1, 2, 3, 4, 5], rank0.GetProperty("step").EnumerateArray().Select(v => v.GetInt64()));
        Assert.Equal(Metrics(0, 4).MuNorm, rank0.GetProperty("mu_norm")[3].GetDouble());
        var since = JsonDocument.Parse(await http.GetStringAsync(new Uri(page, "/live/history.json?since=3")).Within()).RootElement;
        Assert.Equal([4, 5], since.GetProperty("ranks")[0].GetProperty("step").EnumerateArray().Select(v => v.GetInt64()));

        using var bad = await http.GetAsync(new Uri(page, "/live/history.json?since=soon")).Within();
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Contains("since='soon'", await bad.Content.ReadAsStringAsync());
        // Refused: 405, or 404 where gRPC's route for unknown methods (POST /{service}/{method}) matches the path first.
        foreach (var path in new[] { "/live/history.json", "/live/uPlot.min.css", "/live", "/" })
        {
            using var post = await http.PostAsync(new Uri(page, path), new StringContent("{}")).Within();
            Assert.True(post.StatusCode is HttpStatusCode.MethodNotAllowed or HttpStatusCode.NotFound, $"POST {path}: {post.StatusCode}");
        }
        using var onGrpcPort = await http.SendAsync(new HttpRequestMessage(HttpMethod.Get, new Uri(grpc.Host.Address, "/live"))
            { Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact }).Within();
        Assert.Equal(HttpStatusCode.NotFound, onGrpcPort.StatusCode);
    }

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

    /// <summary>Keeps a copy of the screenshot next to the test results (bin/.../live-page/) for a person to look at.</summary>
    static void CopyForInspection(string png, string name)
    {
        string dir = Path.Combine(AppContext.BaseDirectory, "live-page");
        Directory.CreateDirectory(dir);
        File.Copy(png, Path.Combine(dir, name), overwrite: true);
    }
}
