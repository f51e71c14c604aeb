// The Grafana dashboard and the example alert rules against what a real coordinator exports: every query names
// only metrics /metrics serves, and the dashboard shows every one of them.
using System.Text.Json;
using System.Text.RegularExpressions;
using Coordinator.Protocol;

namespace Coordinator.UnitTests;

[Collection("metrics")]
public partial class DashboardTests
{
    static readonly string Root = TestPrograms.RepositoryRoot;

    [Fact]
    public async Task Every_dashboard_panel_queries_only_exported_metrics_and_every_exported_metric_has_a_panel()
    {
        var exported = await ExportedSeries();
        using var dashboard = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "deploy", "grafana", "oec-dashboard.json")));
        var panels = dashboard.RootElement.GetProperty("panels").EnumerateArray().Where(p => p.GetProperty("type").GetString() != "row").ToList();
        Assert.NotEmpty(panels);

        var used = new HashSet<string>();
        foreach (var panel in panels)
        {
            string title = panel.GetProperty("title").GetString()!;
            Assert.True(panel.TryGetProperty("targets", out var targets) && targets.GetArrayLength() > 0, $"panel '{title}' has no targets");
            Assert.Equal("${datasource}", panel.GetProperty("datasource").GetProperty("uid").GetString());
            Assert.True(panel.GetProperty("fieldConfig").GetProperty("defaults").TryGetProperty("unit", out _), $"panel '{title}' sets no unit");
            foreach (var target in targets.EnumerateArray())
            {
                string expr = target.GetProperty("expr").GetString()!;
                Assert.Contains("job=~\"$job\"", expr); // one job at a time: coordinators of several jobs may share a Prometheus
                AssertExported(exported, $"panel '{title}'", expr, used);
            }
        }
        foreach (var variable in dashboard.RootElement.GetProperty("templating").GetProperty("list").EnumerateArray().Where(v => v.GetProperty("type").GetString() == "query"))
            AssertExported(exported, $"variable '{variable.GetProperty("name").GetString()}'", variable.GetProperty("query").GetString()!, used);
        Assert.Equal("datasource job rank", string.Join(' ', dashboard.RootElement.GetProperty("templating").GetProperty("list").EnumerateArray().Select(v => v.GetProperty("name").GetString())));

        var missing = exported.Values.Distinct().Where(family => !used.Any(series => exported[series] == family)).ToList();
        Assert.True(missing.Count == 0, $"exported but on no panel: {string.Join(", ", missing)}");
    }

    [Fact]
    public void Grafanas_import_asks_for_a_prometheus_data_source_which_the_datasource_variable_starts_on()
    {
        string text = File.ReadAllText(Path.Combine(Root, "deploy", "grafana", "oec-dashboard.json"));
        using var dashboard = JsonDocument.Parse(text);
        var input = Assert.Single(dashboard.RootElement.GetProperty("__inputs").EnumerateArray());
        Assert.Equal(("datasource", "prometheus"), (input.GetProperty("type").GetString(), input.GetProperty("pluginId").GetString()));
        string reference = "${" + input.GetProperty("name").GetString() + "}";
        var variable = dashboard.RootElement.GetProperty("templating").GetProperty("list").EnumerateArray().Single(v => v.GetProperty("name").GetString() == "datasource");
        Assert.Equal(reference, variable.GetProperty("current").GetProperty("value").GetString());
        Assert.All(InputReference().Matches(text), m => Assert.Equal(reference, m.Value)); // no reference to an input the import does not ask for
        Assert.Contains(dashboard.RootElement.GetProperty("__requires").EnumerateArray(), r => r.GetProperty("id").GetString() == "prometheus");
    }

    [Fact]
    public void Mean_log_z_and_r_log_are_on_panels_of_their_own()
    {
        using var dashboard = JsonDocument.Parse(File.ReadAllText(Path.Combine(Root, "deploy", "grafana", "oec-dashboard.json")));
        string Panel(string metric) => Assert.Single(dashboard.RootElement.GetProperty("panels").EnumerateArray(),
            p => p.TryGetProperty("targets", out var t) && t.EnumerateArray().Any(x => x.GetProperty("expr").GetString()!.Contains(metric))).GetProperty("title").GetString()!;
        Assert.Equal("Mean log Z", Panel("oec_mean_log_z"));
        Assert.Equal("r_log", Panel("oec_r_log"));
    }

    [Fact]
    public async Task The_example_alert_rules_query_only_exported_metrics()
    {
        var exported = await ExportedSeries();
        string rules = File.ReadAllText(Path.Combine(Root, "deploy", "prometheus", "oec-alerts.yml"));
        var exprs = ExprLine().Matches(rules).Select(m => m.Groups[1].Value).ToList();
        Assert.Equal(5, exprs.Count); // OecLogitGrowth, OecDivergenceEvents, OecJobStalled, OecJobRestarted, OecJobFailed, each expr on one line
        foreach (string expr in exprs) AssertExported(exported, "alert rule", expr, []);
    }

    /// <summary>Asserts that `expr` names at least one oec_ series and only exported ones; adds them to `used`.</summary>
    static void AssertExported(Dictionary<string, string> exported, string where, string expr, HashSet<string> used)
    {
        var names = MetricName().Matches(StringLiteral().Replace(expr, "\"\"")).Select(m => m.Value).ToList();
        Assert.True(names.Count > 0, $"{where}: no oec_ metric in {expr}");
        foreach (string name in names)
        {
            Assert.True(exported.ContainsKey(name), $"{where}: {name} is not exported by the coordinator (in {expr}); exported: {string.Join(", ", exported.Keys.Order())}");
            used.Add(name);
        }
    }

    /// <summary>Series name -> metric family, from the # TYPE lines of a real coordinator's /metrics after both ranks
    /// reported a validated step; a histogram's family gives the series name_bucket, name_sum and name_count.</summary>
    static async Task<Dictionary<string, string>> ExportedSeries()
    {
        await using var grpc = await GrpcJob.StartAsync();
        await grpc.Job.RegisterAll();
        for (int rank = 0; rank < TestJob.World; rank++)
            grpc.Job.Service.Heartbeat(new HeartbeatRequest
            {
                JobId = TestJob.JobId, Generation = 1, Rank = rank, Step = 1,
                Metrics = { new StepMetrics { Step = 1, TrainLoss = 3, ValLoss = 3, LearningRate = 1e-3, StepSeconds = 0.1, MaxAbsLogit = 5 } },
            }, TestJob.Peer);
        using var http = new HttpClient { Timeout = Waits.Timeout };
        string text = await http.GetStringAsync(grpc.Host.MetricsAddress).Within();

        var series = new Dictionary<string, string>();
        foreach (Match type in TypeLine().Matches(text))
        {
            string family = type.Groups[1].Value;
            if (!family.StartsWith("oec_", StringComparison.Ordinal)) continue;
            string[] names = type.Groups[2].Value == "histogram" ? [family + "_bucket", family + "_sum", family + "_count"] : [family];
            foreach (string name in names) series[name] = family;
        }
        Assert.True(series.Count >= 18, $"too few oec_ metrics in:\n{text}");
        return series;
    }

    [GeneratedRegex(@"^# TYPE (\S+) (\S+)$", RegexOptions.Multiline)]
    private static partial Regex TypeLine();

    [GeneratedRegex(@"\$\{DS_[A-Za-z0-9_]*\}")]
    private static partial Regex InputReference();

    [GeneratedRegex(@"\boec_[a-z0-9_]+")]
    private static partial Regex MetricName();

    [GeneratedRegex("\"(?:[^\"\\\\]|\\\\.)*\"")]
    private static partial Regex StringLiteral();

    [GeneratedRegex(@"^\s*expr:\s*(.+?)\s*$", RegexOptions.Multiline)]
    private static partial Regex ExprLine();
}
