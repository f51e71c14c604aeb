// Prometheus for real: a server scraping a local job's coordinator, the Grafana dashboard's queries against what it
// stored, and the example alert rules under promtool.
using Job;
using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Rank.Configuration;
using OecRun.Launching;
using Rank.Distributed;
using Rank.Training;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public partial class PrometheusTests(ITestOutputHelper log)
{
    const string JobId = "prometheus-test";

    // 2 ranks, every step logged, validation every 100 steps: 4 s of training on 2 idle cores, 10 to 30 s on busy ones,
    // which is a dozen scrapes or more at four a second.
    static readonly string[] JobSettings =
    [
        "train.steps=300", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=100",
        "train.eval_batches=2", "train.log_every=1", "train.threads=1", "data.synthetic_tokens=30000",
        "job.world_size=2", "job.checkpoint_every=0", "job.heartbeat_interval_s=0.2", $"job.id={JobId}",
    ];

    [Fact]
    public async Task Prometheus_scraping_a_local_job_reads_back_the_losses_and_max_logit_it_logged_and_every_dashboard_query_has_data()
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, [.. JobSettings, "run.out_dir=" + temp.Path]);
        PrometheusServer? prometheus = null;
        try
        {
            var clock = Stopwatch.StartNew();
            int exit = await Launch.Local(config, Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None,
                hosted: host =>
                {
                    (prometheus = new PrometheusServer(host.MetricsAddress.Authority)).WaitUntilScraped(); // before any rank starts
                    log.WriteLine($"prometheus scraped the coordinator {clock.Elapsed.TotalSeconds:F1} s after the start");
                })
                .WaitAsync(TimeSpan.FromMinutes(5));
            Assert.Equal(0, exit);
            var server = prometheus!;
            log.WriteLine($"job ran {clock.Elapsed.TotalSeconds:F1} s");
            var logged = MetricsLog.Read(Path.Combine(temp.Path, "metrics.jsonl"));

            // Every value Prometheus stored is the one metrics.jsonl has for some step, scrape by scrape in step order.
            var trainSteps = MatchSteps(server, "oec_train_loss", logged, m => m.TrainLoss);
            var logitSteps = MatchSteps(server, "oec_max_abs_logit", logged, m => m.MaxAbsLogit);
            var valSteps = MatchSteps(server, "oec_val_loss", logged, m => m.ValLoss);
            log.WriteLine($"scraped train loss of steps {string.Join(" ", trainSteps)}; val loss of steps {string.Join(" ", valSteps.Distinct())}");
            Assert.True(trainSteps.Distinct().Count() >= 3, $"Prometheus stored the train loss of only steps {string.Join(", ", trainSteps)}");
            Assert.True(logitSteps.Distinct().Count() >= 3, $"Prometheus stored max |logit| of only steps {string.Join(", ", logitSteps)}");
            Assert.All(valSteps, s => Assert.Equal(0, s % 100));

            // The dashboard's panels all show this job, at the time of the last scrape that saw it training.
            double end = Samples(server, "oec_progress_age_seconds")[^1].Time; // the series goes when the job is over
            foreach (var (panel, expr) in DashboardQueries())
            {
                var result = server.Query(expr, end);
                Assert.True(result.GetArrayLength() > 0, $"dashboard panel '{panel}': no data for {expr}");
            }
            AssertReadsRight(server, end);
        }
        finally
        {
            prometheus?.Dispose();
        }
    }

    /// <summary>What the exporter adds around the job's series, and the alert rules' expressions (less their
    /// thresholds) on the real series: each joins and has data.</summary>
    static void AssertReadsRight(PrometheusServer server, double end)
    {
        Assert.Equal(1, server.Query($"target_info{{service_name=\"{Coordinator.CoordinatorHost.ServiceName}\"}}", end).GetArrayLength());
        Assert.Equal(0, server.Query("{__name__=~\"oec_.+\", otel_scope_name!=\"\"}", end).GetArrayLength());
        var tokens = server.Query($"rate(oec_tokens_total{{job=\"{JobId}\"}}[1m])", end);
        Assert.True(tokens.GetArrayLength() == 1 && PrometheusServer.Value(tokens[0].GetProperty("value")) > 0, $"rate(oec_tokens_total): {tokens}");
        string rules = File.ReadAllText(Path.Combine(TestPrograms.RepositoryRoot, "deploy", "prometheus", "oec-alerts.yml"));
        var expressions = AlertExpr().Matches(rules).Select(m => Threshold().Replace(m.Groups[1].Value, "")).ToList();
        Assert.Equal(5, expressions.Count);
        foreach (string expr in expressions)
        {
            var result = server.Query(expr, end);
            Assert.True(result.GetArrayLength() > 0, $"alert expression {expr}: no data");
        }
    }

    [GeneratedRegex(@"^\s*expr:\s*(.+?)\s*$", RegexOptions.Multiline)]
    private static partial Regex AlertExpr();

    // A comparison with a number: what makes an expression an alert's condition.
    [GeneratedRegex(@"\s*[<>]=?\s*[0-9.]+")]
    private static partial Regex Threshold();

    /// <summary>For each stored sample of rank 0's <paramref name="metric"/>, the step of the metrics.jsonl line with that
    /// value (exactly: both sides print floats as the shortest string that reads back to the same double). Asserts
    /// that every sample has one and that steps never go back.</summary>
    static List<int> MatchSteps(PrometheusServer prometheus, string metric, IReadOnlyList<StepMetrics> logged, Func<StepMetrics, double?> read)
    {
        var steps = new List<int>();
        foreach (var (time, value) in Samples(prometheus, metric))
        {
            var line = logged.FirstOrDefault(m => read(m) == value)
                ?? throw new Xunit.Sdk.XunitException($"{metric} = {value:R} at {time} is in no line of metrics.jsonl");
            if (steps.Count > 0 && line.Step < steps[^1]) Assert.Fail($"{metric}: step {line.Step} scraped after step {steps[^1]}");
            steps.Add(line.Step);
        }
        return steps;
    }

    /// <summary>The samples (Unix seconds, value) of the job's series of <paramref name="metric"/> stored in the last 10 minutes.</summary>
    static List<(double Time, double Value)> Samples(PrometheusServer prometheus, string metric)
    {
        var series = prometheus.Query($"{metric}{{job=\"{JobId}\"}}[10m]");
        Assert.True(series.GetArrayLength() == 1, $"{metric}: expected one series of the job, got {series}");
        return series[0].GetProperty("values").EnumerateArray().Select(s => (s[0].GetDouble(), PrometheusServer.Value(s))).ToList();
    }

    /// <summary>Every target of deploy/grafana/oec-dashboard.json with Grafana's variables filled in as for this job
    /// (all ranks, rate windows of a minute).</summary>
    static IEnumerable<(string Panel, string Expr)> DashboardQueries()
    {
        using var dashboard = JsonDocument.Parse(File.ReadAllText(Path.Combine(TestPrograms.RepositoryRoot, "deploy", "grafana", "oec-dashboard.json")));
        var queries = new List<(string, string)>();
        foreach (var panel in dashboard.RootElement.GetProperty("panels").EnumerateArray().Where(p => p.TryGetProperty("targets", out _)))
            foreach (var target in panel.GetProperty("targets").EnumerateArray())
                queries.Add((panel.GetProperty("title").GetString()!, target.GetProperty("expr").GetString()!
                    .Replace("$job", JobId).Replace("$rank", ".*").Replace("$__rate_interval", "1m")));
        Assert.All(queries, q => Assert.DoesNotMatch(GrafanaVariable(), q.Item2));
        Assert.NotEmpty(queries);
        return queries;
    }

    [GeneratedRegex(@"\$")]
    private static partial Regex GrafanaVariable();

    [Fact]
    public void The_example_alert_rules_pass_promtool_check_and_their_unit_tests()
    {
        string rules = Path.Combine(TestPrograms.RepositoryRoot, "deploy", "prometheus", "oec-alerts.yml");
        string tests = Path.Combine(TestPrograms.RepositoryRoot, "deploy", "prometheus", "oec-alerts.test.yml");

        var (check, checkOutput) = Promtool("check", "rules", rules);
        Assert.True(check == 0, $"promtool check rules exited with {check}:\n{checkOutput}");
        Assert.Contains("SUCCESS: 5 rules found", checkOutput);

        var (test, testOutput) = Promtool("test", "rules", tests);
        Assert.True(test == 0, $"promtool test rules exited with {test}:\n{testOutput}");
        Assert.Contains("SUCCESS", testOutput);
    }

    static (int ExitCode, string Output) Promtool(params string[] arguments)
    {
        var info = new ProcessStartInfo(TestPrograms.Require("promtool"), arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var promtool = Process.Start(info)!;
        var output = promtool.StandardOutput.ReadToEndAsync();
        var errors = promtool.StandardError.ReadToEndAsync();
        if (!promtool.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            promtool.Kill();
            throw new TimeoutException($"promtool {string.Join(' ', arguments)} did not finish within 60 s");
        }
        return (promtool.ExitCode, output.Result + errors.Result);
    }
}
