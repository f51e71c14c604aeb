// The live page: MetricsHistory (order, replacement, bound, Truncate and the rolled-back passes, JSON) and its HTTP endpoints on the metrics port;
// the page rendered by headless Chromium is in OecRun.FunctionalTests.
using Job;
using System.Net;
using System.Text.Json;
using Coordinator.Protocol;
using StepMetrics = Coordinator.Protocol.StepMetrics;
using static Coordinator.UnitTests.LivePageMetrics;

namespace Coordinator.UnitTests;

[Collection("metrics")]
public class LivePageTests
{
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
    public void Truncate_keeps_the_undone_points_apart_marked_with_the_step_the_job_went_back_to()
    {
        using var job = new TestJob();
        using var history = new MetricsHistory(job.State);
        foreach (int step in new[] { 10, 20, 30, 40 }) history.Add(0, Metrics(0, step).ToRecord());
        history.Truncate(20);
        foreach (int step in new[] { 30, 40 }) history.Add(0, Metrics(0, step).ToRecord() with { TrainLoss = 1 });
        history.Truncate(0);

        Assert.Empty(history.Points(0));
        Assert.Equal([(20L, new[] { 30, 40 }), (0L, new[] { 10, 20, 30, 40 })],
            history.RolledBack(0).Select(p => (p.To, p.Points.Select(m => m.Step).ToArray())));
        Assert.Equal(1, history.RolledBack(0)[1].Points[2].TrainLoss);
        var passes = Json(history, since: 100).GetProperty("ranks")[0].GetProperty("rolled_back"); // whole whatever since
        Assert.Equal([20, 0], passes.EnumerateArray().Select(p => p.GetProperty("to").GetInt64()));
        Assert.Equal([10, 20, 30, 40], passes[1].GetProperty("step").EnumerateArray().Select(v => v.GetInt32()));
        Assert.Equal(Metrics(0, 40).TrainLoss, passes[0].GetProperty("train_loss")[1].GetDouble());
    }

    /// <summary>The page draws rank 0's undone points: another rank's passes come as the step it went back to only, so
    /// that a poll of a large job after a rollback is not every rank's history again.</summary>
    [Fact]
    public void Ranks_other_than_0_send_their_rolled_back_passes_as_the_step_they_went_back_to_only()
    {
        using var job = new TestJob();
        using var history = new MetricsHistory(job.State);
        foreach (int rank in new[] { 0, 1 })
            foreach (int step in new[] { 10, 20, 30 }) history.Add(rank, Metrics(rank, step).ToRecord());
        history.Truncate(10);

        var ranks = Json(history, since: 100).GetProperty("ranks");
        var other = Assert.Single(ranks.EnumerateArray(), r => r.GetProperty("rank").GetInt32() == 1).GetProperty("rolled_back");
        Assert.Equal(10, Assert.Single(other.EnumerateArray()).GetProperty("to").GetInt64());
        Assert.False(other[0].TryGetProperty("step", out _));
        var mine = Assert.Single(ranks.EnumerateArray(), r => r.GetProperty("rank").GetInt32() == 0).GetProperty("rolled_back");
        Assert.Equal([20, 30], mine[0].GetProperty("step").EnumerateArray().Select(v => v.GetInt32()));
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
}
