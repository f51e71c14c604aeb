// The cluster shape on one machine: `oecrun coordinator --linger` and two pods of `oecrun rank --local-ranks 2`.
using System.Diagnostics;
using System.Text.RegularExpressions;
using OecRun.Launching;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public class PodRanksTests(ITestOutputHelper log)
{
    static readonly string[] Job =
    [
        "job.id=pods", "job.world_size=4", "train.steps=20", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32",
        "train.eval_every=0", "train.log_every=5", "data.synthetic_tokens=30000", "job.checkpoint_every=10",
        "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=10",
    ];

    [Fact]
    public async Task Two_pods_of_two_local_ranks_train_a_world_of_4_and_the_lingering_coordinator_serves_until_SIGTERM()
    {
        using var temp = new TempDirectory();
        string token = new('t', 32);
        using var coordinator = ChildProcesses.Start(
            Launch.SelfCommand(["coordinator", "--port", "0", "--metrics-port", "0", "--linger", .. Job, "run.out_dir=" + temp.Path]),
            new() { ["OEC_JOB_TOKEN"] = token });
        var lines = new List<string>();
        coordinator.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (lines) lines.Add(e.Data); };
        coordinator.BeginOutputReadLine();
        string listening = await Until(() => lines.FirstOrDefault(l => l.Contains("Prometheus metrics at")), "the coordinator's address line");
        string grpcPort = Regex.Match(listening, @"ranks reach it at http://[^:]+:(\d+)/").Groups[1].Value;
        string metricsPort = Regex.Match(listening, @"Prometheus metrics at http://[^:]+:(\d+)/metrics").Groups[1].Value;

        var pods = Enumerable.Range(0, 2).Select(index => ChildProcesses.Start(Launch.SelfCommand("rank", "--local-ranks", "2"), new()
        {
            ["OEC_COORDINATOR"] = $"http://127.0.0.1:{grpcPort}", ["OEC_JOB_ID"] = "pods", ["OEC_JOB_TOKEN"] = token, ["WORLD_SIZE"] = "4",
            ["JOB_COMPLETION_INDEX"] = index.ToString(), ["RANK"] = null, ["LOCAL_RANK"] = null,
        })).ToList();
        var outputs = pods.Select(p => p.StandardOutput.ReadToEndAsync()).ToList();
        try
        {
            foreach (var pod in pods) Assert.True(pod.WaitForExit(TimeSpan.FromMinutes(3)), "a pod still runs after 3 minutes");
            foreach (var o in outputs) log.WriteLine(await o);
            Assert.All(pods, p => Assert.Equal(0, p.ExitCode));
            Assert.Contains("pod 1: started ranks 2..3 (LOCAL_RANK 0..1)", await outputs[1]);
            Assert.Contains("[rank 0] done: 20 steps", await outputs[0]);

            string coordinatorLog = File.ReadAllText(Path.Combine(temp.Path, "coordinator.log"));
            Assert.Contains("generation 1: all 4 ranks registered", coordinatorLog);
            Assert.Contains("job pods succeeded: finished 20 steps", coordinatorLog);
            await Until(() => lines.FirstOrDefault(l => l.Contains("--linger: still serving")), "the linger line");
            Assert.False(coordinator.HasExited, "the coordinator exited although --linger");
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
            string metrics = await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics");
            Assert.Contains("oec_step{job=\"pods\",rank=\"3\"} 20", metrics);

            ChildProcesses.Signal(coordinator, 15); // SIGTERM
            Assert.True(coordinator.WaitForExit(TimeSpan.FromSeconds(30)), "the lingering coordinator still runs 30 s after SIGTERM");
            Assert.Equal(0, coordinator.ExitCode);
        }
        finally
        {
            foreach (var p in pods.Append(coordinator).Where(p => !p.HasExited)) p.Kill(entireProcessTree: true);
        }

        // Restarted after the end (a Deployment's pod moved): resumes at the last step, has nothing to run, ends at once.
        using var again = ChildProcesses.Start(
            Launch.SelfCommand(["coordinator", "--port", "0", "--metrics-port", "0", .. Job, "job.resume=true", "run.out_dir=" + temp.Path]),
            new() { ["OEC_JOB_TOKEN"] = token });
        Assert.True(again.WaitForExit(TimeSpan.FromSeconds(60)), "the restarted coordinator still runs after 60 s");
        Assert.Equal(0, again.ExitCode);
        Assert.Contains("already finished: the checkpoint", File.ReadAllText(Path.Combine(temp.Path, "coordinator.log")));
    }

    [Fact]
    public void Local_ranks_without_a_pod_index_exit_with_2_naming_JOB_COMPLETION_INDEX()
    {
        using var pod = ChildProcesses.Start(Launch.SelfCommand("rank", "--local-ranks", "2"),
            new() { ["JOB_COMPLETION_INDEX"] = null, ["OEC_POD_INDEX"] = null });
        string error = pod.StandardError.ReadToEnd();
        Assert.True(pod.WaitForExit(TimeSpan.FromSeconds(30)));

        Assert.Equal(2, pod.ExitCode);
        Assert.Contains("JOB_COMPLETION_INDEX", error);
    }

    static async Task<string> Until(Func<string?> found, string what)
    {
        var clock = Stopwatch.StartNew();
        while (clock.Elapsed < TimeSpan.FromSeconds(90))
        {
            if (found() is { } line) return line;
            await Task.Delay(50);
        }
        throw new TimeoutException($"{what}: not seen within 90 s");
    }
}
