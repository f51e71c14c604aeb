// The Prometheus endpoint: rank 0's step metrics under the names of metrics.jsonl for the job, each rank's step and step time.
using System.Globalization;
using Coordinator.Protocol;
using Data;
using Job;
using StepMetrics = Coordinator.Protocol.StepMetrics;

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
    public async Task The_metrics_endpoint_serves_rank_0s_newest_step_metrics_each_ranks_step_and_step_time_and_the_jobs_state()
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
        // the job's step metrics: rank 0's newest logged step, no rank label
        Assert.Equal(3.25, Value("oec_train_loss"));
        Assert.Equal(2.25, Value("oec_val_loss"));
        Assert.Equal(1e-3, Value("oec_learning_rate"));
        Assert.Equal(0.5, Value("oec_grad_norm"));
        Assert.Equal(1000, Value("oec_tokens_per_second"));
        Assert.Equal(0.125, Value("oec_mu_norm"));
        Assert.Equal(-0.5, Value("oec_mean_logit"));
        Assert.Equal(1.5, Value("oec_logit_std"));
        Assert.Equal(9.75, Value("oec_max_abs_logit"));
        Assert.Equal(6.5, Value("oec_mean_log_z"));
        Assert.Equal(0.75, Value("oec_r_log"));
        Assert.Equal(6, Value("oec_metrics_step")); // the step the gauges above describe
        Assert.Equal(6, Value("oec_val_step"));
        Assert.DoesNotContain("oec_train_loss{job=\"test-job\",rank=", text);
        // each rank's step and step time
        Assert.Equal(6, Value("oec_step", 0));
        Assert.Equal(5, Value("oec_step", 1));
        Assert.Equal(0.02, Value("oec_step_seconds", 0));
        Assert.Equal(0.3, Value("oec_step_seconds", 1));
        // the job's state
        Assert.Equal(2, Value("oec_ranks_alive"));
        Assert.Equal(2, Value("oec_world_size"));
        Assert.Equal(1, Value("oec_generation"));
        Assert.Contains("oec_job_phase{job=\"test-job\",phase=\"running\"} 1", text);
        Assert.Contains("oec_job_phase{job=\"test-job\",phase=\"failed\"} 0", text);
        Assert.InRange(Value("oec_progress_age_seconds"), 0, Waits.Timeout.TotalSeconds);
        Assert.Equal(0, Value("oec_restarts_total"));
        Assert.Equal(3, Value("oec_step_duration_seconds_count"));   // every rank's reports: steps 5 and 6 of rank 0 (the repeat counted once), step 5 of rank 1
        Assert.Equal(0.52, Value("oec_step_duration_seconds_sum"), 1e-9);
        Assert.Contains("oec_step_duration_seconds_bucket{job=\"test-job\",le=\"0.025\"} 1", text);
        Assert.Contains("# TYPE oec_restarts_total counter", text);
        Assert.Contains("# TYPE oec_step_duration_seconds histogram", text);
        Assert.Contains("# TYPE oec_tokens_total counter", text);
        Assert.Equal(6 * TokensPerStep, Value("oec_tokens_total")); // rank 0's 6 steps of the global batch
        Assert.DoesNotContain("otel_scope", text);
        Assert.Contains($"target_info{{service_name=\"{CoordinatorHost.ServiceName}\"", text);

        job.ReportFailure(1, 1, "boom");
        text = await Scrape(grpc);
        Assert.Equal(1, Value("oec_restarts_total"));
        Assert.Equal(2, Value("oec_generation"));
        Assert.Contains("oec_job_phase{job=\"test-job\",phase=\"registering\"} 1", text);
        Assert.Equal(2, Value("oec_world_size")); // while no rank of generation 2 is in: what the ranks-alive alert compares with
        Assert.Equal(0, Value("oec_ranks_alive"));
        // generation 2 starts from step 0 (no checkpoint): rank 0's reports of steps 5 and 6 are void
        Assert.DoesNotContain("oec_train_loss{", text);
        Assert.DoesNotContain("oec_val_loss{", text);
        Assert.DoesNotContain("oec_step{", text);
    }

    /// <summary>OpenTelemetry keeps 2000 series an instrument unless told otherwise and folds the rest into one
    /// overflow series: every rank of the largest world sizes must keep its own.</summary>
    [Fact]
    public async Task Every_rank_of_a_job_of_2500_keeps_its_own_step_series()
    {
        const int world = 2500;
        using var dir = new TempDir();
        var plan = new SequencePlan([new SyntheticCorpus(vocabSize: 64, tokenCount: 200_000, seed: 1)], 16);
        // timeouts far beyond the test's time: 2500 registrations and heartbeats take a while on a loaded machine
        var options = new JobOptions { Id = TestJob.JobId, WorldSize = world, HeartbeatTimeoutS = 600, RendezvousTimeoutS = 600, StepTimeoutS = 0 };
        var spec = new JobSpec(TestJob.JobId, TestJob.Token, options, TestJob.ConfigJson,
            new BatchPlan(plan, world * 2, seed: 7), 2, 10, dir.Path) { ResumeConflict = _ => null };
        using var log = new JobLog(null, Path.Combine(dir.Path, "coordinator.log"));
        using var state = new JobState(spec, log);
        var service = new CoordinatorService(state);
        await using var host = await CoordinatorHost.StartAsync(state, log, System.Net.IPAddress.Loopback, 0).Within();
        var registered = Enumerable.Range(0, world).Select(r => service.Register(
            new RegisterRequest { JobId = TestJob.JobId, RequestedRank = r, WorldSize = world, Host = "h", Pid = 1000 + r }, TestJob.Peer, default)).ToList();
        await Task.WhenAll(registered).Within();
        for (int r = 0; r < world; r++)
            service.Heartbeat(new HeartbeatRequest { JobId = TestJob.JobId, Generation = 1, Rank = r, Step = 1, Metrics = { Metrics(1, 3.0, 0.01 * (r + 1)) } }, TestJob.Peer);

        using var http = new HttpClient { Timeout = Waits.Timeout };
        string text = await http.GetStringAsync(host.MetricsAddress).Within();

        Assert.DoesNotContain("otel_metric_overflow", text);
        Assert.Equal(world, text.Split('\n').Count(l => l.StartsWith("oec_step{", StringComparison.Ordinal)));
        Assert.Equal(1, ValueIn(text, "oec_step", world - 1));
        Assert.Equal(0.01 * world, ValueIn(text, "oec_step_seconds", world - 1), 1e-9);
        Assert.Single(text.Split('\n'), l => l.StartsWith("oec_train_loss{", StringComparison.Ordinal)); // the job's, once
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

        Assert.Equal(3.25, ValueIn(text, "oec_train_loss", null));
        Assert.Equal(2.25, ValueIn(text, "oec_val_loss", null));
        Assert.Equal(5, ValueIn(text, "oec_val_step", null));
        Assert.Equal(6, ValueIn(text, "oec_metrics_step", null));
    }
}
