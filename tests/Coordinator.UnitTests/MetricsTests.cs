// The Prometheus endpoint: the ranks' step metrics under the names of metrics.jsonl, with job and rank labels.
using System.Globalization;
using Coordinator.Protocol;

namespace Coordinator.UnitTests;

/// <summary>Alone: every coordinator in this process exports through the same meter name, and the other tests' jobs
/// all carry the job id "test-job".</summary>
[CollectionDefinition("metrics", DisableParallelization = true)]
public class MetricsCollection;

[Collection("metrics")]
public class MetricsTests
{
    static StepMetrics Metrics(long step, double loss, double seconds) => new()
    {
        Step = step, TrainLoss = loss, ValLoss = 2.25, LearningRate = 1e-3, GradNorm = 0.5, TokensPerSecond = 1000, StepSeconds = seconds,
        MuNorm = 0.125, MeanLogit = -0.5, LogitStd = 1.5, MaxAbsLogit = 9.75, MeanLogZ = 6.5, RLog = 0.75,
    };

    // Tokens of one step: the global batch, sequences x sequence length.
    static readonly long TokensPerStep = (long)TestJob.NewBatchPlan().BatchSize * TestJob.NewBatchPlan().Plan.SequenceLength;

    static async Task<string> Scrape(GrpcJob grpc)
    {
        using var http = new HttpClient { Timeout = Waits.Timeout };
        return await http.GetStringAsync(grpc.Host.MetricsAddress).Within();
    }

    static string Series(string name, int? rank) => $"{name}{{job=\"{TestJob.JobId}\"{(rank is null ? "" : $",rank=\"{rank}\"")}}}";

    /// <summary>The value of the series `name` (of `rank`, or of the job when null) in a scrape.</summary>
    static double ValueIn(string text, string name, int? rank)
    {
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(Series(name, rank) + " ", StringComparison.Ordinal))
            ?? throw new Xunit.Sdk.XunitException($"no series {Series(name, rank)} in:\n{text}");
        return double.Parse(line.Split(' ')[1], CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task The_metrics_endpoint_serves_each_ranks_newest_step_metrics_step_durations_ranks_alive_and_restarts()
    {
        await using var grpc = await GrpcJob.StartAsync();
        var job = grpc.Job;
        await job.RegisterAll();
        job.Service.Heartbeat(new HeartbeatRequest { JobId = TestJob.JobId, Generation = 1, Rank = 0, Step = 5, Metrics = { Metrics(5, 3.5, 0.2) } }, TestJob.Peer);
        job.Service.Heartbeat(new HeartbeatRequest { JobId = TestJob.JobId, Generation = 1, Rank = 1, Step = 5, Metrics = { Metrics(5, 3.5, 0.3) } }, TestJob.Peer);
        job.Service.Heartbeat(new HeartbeatRequest { JobId = TestJob.JobId, Generation = 1, Rank = 0, Step = 6, Metrics = { Metrics(6, 3.25, 0.02) } }, TestJob.Peer);
        job.Service.Heartbeat(new HeartbeatRequest { JobId = TestJob.JobId, Generation = 1, Rank = 0, Step = 6, Metrics = { Metrics(6, 3.25, 0.02) } }, TestJob.Peer); // same step again

        string text = await Scrape(grpc);

        double Value(string name, int? rank = null) => ValueIn(text, name, rank);
        Assert.Equal(3.25, Value("oec_train_loss", 0));
        Assert.Equal(3.5, Value("oec_train_loss", 1));
        Assert.Equal(2.25, Value("oec_val_loss", 0));
        Assert.Equal(1e-3, Value("oec_learning_rate", 0));
        Assert.Equal(0.5, Value("oec_grad_norm", 1));
        Assert.Equal(1000, Value("oec_tokens_per_second", 0));
        Assert.Equal(0.125, Value("oec_mu_norm", 0));
        Assert.Equal(-0.5, Value("oec_mean_logit", 0));
        Assert.Equal(1.5, Value("oec_logit_std", 0));
        Assert.Equal(9.75, Value("oec_max_abs_logit", 0));
        Assert.Equal(6.5, Value("oec_mean_log_z", 0));
        Assert.Equal(0.75, Value("oec_r_log", 0));
        Assert.Equal(6, Value("oec_step", 0));
        Assert.Equal(6, Value("oec_metrics_step", 0)); // the step the gauges above describe
        Assert.Equal(5, Value("oec_metrics_step", 1));
        Assert.Equal(6, Value("oec_val_step", 0));
        Assert.Equal(2, Value("oec_ranks_alive"));
        Assert.Equal(0, Value("oec_restarts_total"));
        Assert.Equal(2, Value("oec_step_duration_seconds_count", 0));   // steps 5 and 6; the repeated step 6 counted once
        Assert.Equal(0.22, Value("oec_step_duration_seconds_sum", 0), 1e-9);
        Assert.Contains("oec_step_duration_seconds_bucket{job=\"test-job\",rank=\"0\",le=\"0.025\"} 1", text);
        Assert.Contains("# TYPE oec_restarts_total counter", text);
        Assert.Contains("# TYPE oec_step_duration_seconds histogram", text);
        Assert.Contains("# TYPE oec_tokens_total counter", text);
        Assert.Equal(6 * TokensPerStep, Value("oec_tokens_total")); // rank 0's 6 steps of the global batch
        Assert.DoesNotContain("otel_scope", text);
        Assert.Contains($"target_info{{service_name=\"{CoordinatorHost.ServiceName}\"", text);

        job.ReportFailure(1, 1, "boom");
        Assert.Equal(1, await Task.Run(async () =>
        {
            text = await Scrape(grpc);
            return Value("oec_restarts_total");
        }));
    }

    [Fact]
    public async Task Tokens_trained_count_every_step_of_rank_0_once_and_again_after_the_job_went_back()
    {
        await using var grpc = await GrpcJob.StartAsync();
        await grpc.Job.RegisterAll();
        foreach (long step in new long[] { 4, 4, 10 }) grpc.Job.Heartbeat(1, 0, step);
        grpc.Job.Heartbeat(1, 1, 10); // rank 1 adds nothing
        Assert.Equal(10 * TokensPerStep, ValueIn(await Scrape(grpc), "oec_tokens_total", null));

        grpc.Job.ReportFailure(1, 1, "boom"); // generation 2 resumes from step 0 (no checkpoint): steps 1..3 are trained again
        await grpc.Job.RegisterAll();
        grpc.Job.Heartbeat(2, 0, 3);
        Assert.Equal(13 * TokensPerStep, ValueIn(await Scrape(grpc), "oec_tokens_total", null));
    }

    [Fact]
    public async Task The_validation_loss_stays_at_the_newest_validation_while_later_steps_have_none()
    {
        await using var grpc = await GrpcJob.StartAsync();
        await grpc.Job.RegisterAll();
        var later = Metrics(6, 3.25, 0.02);
        later.ClearValLoss(); // step 5 validated, step 6 did not
        grpc.Job.Service.Heartbeat(new HeartbeatRequest { JobId = TestJob.JobId, Generation = 1, Rank = 0, Step = 6, Metrics = { Metrics(5, 3.5, 0.2), later } }, TestJob.Peer);

        string text = await Scrape(grpc);

        Assert.Equal(3.25, ValueIn(text, "oec_train_loss", 0));
        Assert.Equal(2.25, ValueIn(text, "oec_val_loss", 0));
        Assert.Equal(5, ValueIn(text, "oec_val_step", 0));
        Assert.Equal(6, ValueIn(text, "oec_metrics_step", 0));
        Assert.DoesNotContain(Series("oec_val_loss", 1), text); // rank 1 never validated
    }
}
