// A real Prometheus server on loopback scraping one target, with its HTTP query API; killed on dispose.
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace OecRun.FunctionalTests;

internal sealed class PrometheusServer : IDisposable
{
    static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);

    readonly TempDirectory dir = new();
    readonly Process process;
    readonly StringBuilder output = new();
    readonly HttpClient http;

    /// <summary>Scrapes <paramref name="target"/> (host:port serving /metrics) four times a second (a short job on an idle
    /// machine trains for only a few seconds), keeping the target's own `job` label (honor_labels), as README's scrape
    /// configuration does.</summary>
    public PrometheusServer(string target)
    {
        File.WriteAllText(dir.File("prometheus.yml"), $$"""
            global: { scrape_interval: 250ms, scrape_timeout: 250ms, evaluation_interval: 1s }
            scrape_configs:
              - job_name: oec
                honor_labels: true
                static_configs: [{ targets: ["{{target}}"] }]
            """);
        // A port the system just handed out; another process could take it before Prometheus binds, which Start reports.
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Address = new Uri($"http://127.0.0.1:{port}/");
        http = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(10) };
        var info = new ProcessStartInfo(TestPrograms.Require("prometheus"),
            [$"--config.file={dir.File("prometheus.yml")}", $"--storage.tsdb.path={dir.File("data")}", $"--web.listen-address=127.0.0.1:{port}"])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        process = new Process { StartInfo = info };
        process.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.ErrorDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
    }

    /// <summary>The web address, e.g. http://127.0.0.1:9090/.</summary>
    public Uri Address { get; }

    /// <summary>What Prometheus printed so far (its log goes to stderr).</summary>
    public string Output { get { lock (output) return output.ToString(); } }

    /// <summary>Waits until the server answers /-/ready and has scraped its target once successfully (up == 1).</summary>
    public void WaitUntilScraped()
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < ReadyTimeout)
        {
            if (process.HasExited) throw new InvalidOperationException($"prometheus exited with code {process.ExitCode}:\n{Output}");
            try
            {
                if (Query("up").EnumerateArray().Any(s => Value(s.GetProperty("value")) == 1)) return;
            }
            catch (HttpRequestException) { } // not listening yet
            catch (TaskCanceledException) { }
            catch (QueryException) { } // not ready yet ("Service Unavailable")
            Thread.Sleep(200);
        }
        throw new TimeoutException($"prometheus at {Address} had not scraped its target within {ReadyTimeout.TotalSeconds} s:\n{Output}");
    }

    /// <summary>The `result` of /api/v1/query for <paramref name="promql"/> at <paramref name="time"/> (Unix seconds; null:
    /// now): an array of {metric, value: [t, "v"]} (instant vector) or {metric, values: [[t, "v"], ...]} (range vector).</summary>
    public JsonElement Query(string promql, double? time = null)
    {
        string uri = "api/v1/query?query=" + Uri.EscapeDataString(promql)
            + (time is double t ? "&time=" + t.ToString("R", CultureInfo.InvariantCulture) : "");
        using var response = http.GetAsync(uri).GetAwaiter().GetResult();
        string body = response.Content.ReadAsStringAsync().GetAwaiter().GetResult();
        using var json = TryParse(body);
        if (json is null || json.RootElement.GetProperty("status").GetString() != "success")
            throw new QueryException($"prometheus query '{promql}': {(int)response.StatusCode} {body}");
        return json.RootElement.GetProperty("data").GetProperty("result").Clone();
    }

    /// <summary>The number of a sample [t, "v"]: Prometheus prints floats as the shortest string that reads back exactly.</summary>
    public static double Value(JsonElement sample) => double.Parse(sample[1].GetString()!, CultureInfo.InvariantCulture);

    static JsonDocument? TryParse(string body)
    {
        try { return JsonDocument.Parse(body); }
        catch (JsonException) { return null; }
    }

    public void Dispose()
    {
        try
        {
            if (!process.HasExited) process.Kill(entireProcessTree: true);
            process.WaitForExit(TimeSpan.FromSeconds(30));
        }
        finally
        {
            process.Dispose();
            http.Dispose();
            dir.Dispose();
        }
    }

    public sealed class QueryException(string message) : Exception(message);
}
