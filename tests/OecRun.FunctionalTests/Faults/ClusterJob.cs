// A job in the cluster's shape on this machine: `oecrun coordinator` and one `oecrun rank` per node, each node's rank
// started again whenever it exits with a code that asks for it (ExitCodes.Recreate), as a Kubernetes Job's pod failure
// policy does. A node may live in a network namespace (its commands run under `ip netns exec`).
using System.Collections.Concurrent;
using System.Diagnostics;
using Job;
using OecRun.Launching;

namespace OecRun.FunctionalTests.Faults;

/// <summary>Where a process of the job runs: a network namespace (null: this one) and the address others reach it at.</summary>
public sealed record Node(string? Namespace, string Address)
{
    public static readonly Node Here = new(null, "127.0.0.1");

    public ProcessCommand Command(params string[] arguments)
    {
        var self = Launch.SelfCommand(arguments);
        return Namespace is null ? self : new ProcessCommand("ip", ["netns", "exec", Namespace, self.FileName, .. self.Arguments]);
    }
}

public sealed class ClusterJob : IDisposable
{
    readonly string outDir;
    readonly string[] settings;
    readonly Node coordinatorNode;
    readonly IReadOnlyList<Node> rankNodes;
    readonly int port = FreePort();
    readonly string token = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
    readonly ConcurrentQueue<string> output = new();
    readonly List<Process> processes = [];
    readonly CancellationTokenSource over = new();
    Process? coordinator;
    Task<int[]>? ranks;

    /// <param name="rankNodes">Rank r runs on rankNodes[r]; job.world_size must be their number.</param>
    ClusterJob(string outDir, string[] settings, Node coordinatorNode, IReadOnlyList<Node> rankNodes) =>
        (this.outDir, this.settings, this.coordinatorNode, this.rankNodes) = (outDir, settings, coordinatorNode, rankNodes);

    /// <summary>The fault job (<see cref="FaultJob.Settings"/>) into <paramref name="outDir"/>: its coordinator and
    /// its supervised ranks started.</summary>
    public static ClusterJob Start(string outDir, Node coordinatorNode, IReadOnlyList<Node> rankNodes)
    {
        var job = new ClusterJob(outDir, FaultJob.Settings, coordinatorNode, rankNodes);
        job.StartCoordinator();
        job.StartRanks();
        return job;
    }

    /// <summary>Every line the coordinator and the ranks printed, oldest first, each with its process's name.</summary>
    public string Output => string.Join('\n', output);

    /// <summary>Each rank's exit codes in order: the codes it was started again after, then its last.</summary>
    public ConcurrentDictionary<int, List<int>> ExitCodesByRank { get; } = new();

    public Process Coordinator => coordinator ?? throw new InvalidOperationException("the coordinator has not started");

    /// <summary>Starts (or starts again, after a crash) the coordinator; it resumes from the run directory's newest checkpoint.</summary>
    public void StartCoordinator()
    {
        coordinator = Spawn("coordinator", coordinatorNode.Command(
            ["coordinator", "--port", port.ToString(), "--metrics-port", "0", .. settings, "job.resume=auto", "run.out_dir=" + outDir]),
            new() { ["OEC_JOB_TOKEN"] = token });
    }

    /// <summary>Starts every node's rank under its supervisor; completes with each rank's final exit code.</summary>
    public void StartRanks() => ranks = Task.WhenAll(rankNodes.Select((node, r) => Task.Run(() => Supervise(r, node))));

    /// <summary>The ranks' final exit codes and the coordinator's, once all have exited; throws after <paramref name="timeout"/>.
    /// Every line the processes printed goes to <paramref name="log"/> either way.</summary>
    public async Task<(int[] Ranks, int Coordinator)> WaitAsync(TimeSpan timeout, Xunit.Abstractions.ITestOutputHelper log)
    {
        try
        {
            var codes = await (ranks ?? throw new InvalidOperationException("the ranks have not started")).WaitAsync(timeout);
            await Coordinator.WaitForExitAsync().WaitAsync(timeout);
            return (codes, Coordinator.ExitCode);
        }
        finally
        {
            log.WriteLine(Output);
        }
    }

    /// <summary>The newest step in metrics.jsonl (0 before the first logged step).</summary>
    public long LoggedStep()
    {
        string path = Path.Combine(outDir, "metrics.jsonl");
        if (!File.Exists(path)) return 0;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        long step = 0;
        while (reader.ReadLine() is { } line)
            if (System.Text.RegularExpressions.Regex.Match(line, "\"step\":(\\d+)") is { Success: true } m) step = long.Parse(m.Groups[1].Value);
        return step;
    }

    /// <summary>Waits until metrics.jsonl has reached <paramref name="step"/>; throws after <paramref name="timeout"/>.</summary>
    public async Task UntilStepAsync(long step, TimeSpan timeout)
    {
        var clock = Stopwatch.StartNew();
        while (LoggedStep() < step)
        {
            if (clock.Elapsed > timeout) throw new TimeoutException($"step {step} not logged within {timeout.TotalSeconds:0} s:\n{Output}");
            await Task.Delay(20);
        }
    }

    int Supervise(int rank, Node node)
    {
        var codes = ExitCodesByRank.GetOrAdd(rank, _ => []);
        while (true)
        {
            var process = Spawn($"rank {rank}", node.Command("rank"), new()
            {
                ["OEC_COORDINATOR"] = $"http://{coordinatorNode.Address}:{port}", ["OEC_JOB_ID"] = JobId, ["OEC_JOB_TOKEN"] = token,
                ["RANK"] = rank.ToString(), ["WORLD_SIZE"] = rankNodes.Count.ToString(), ["LOCAL_RANK"] = "0", ["LOCAL_WORLD_SIZE"] = "1",
                ["OEC_RANK_HOST"] = node.Address, ["OEC_REGISTER_TIMEOUT_S"] = "90",
            });
            process.WaitForExit();
            lock (codes) codes.Add(process.ExitCode);
            if (!ExitCodes.Recreate.Contains(process.ExitCode) || over.IsCancellationRequested) return process.ExitCode;
            Thread.Sleep(200); // a pod restart's delay, shortened
        }
    }

    string JobId => settings.Single(s => s.StartsWith("job.id=", StringComparison.Ordinal))["job.id=".Length..];

    Process Spawn(string name, ProcessCommand command, Dictionary<string, string?> environment)
    {
        var process = ChildProcesses.Start(command, environment);
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) output.Enqueue($"[{name}] {e.Data}"); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) output.Enqueue($"[{name}] {e.Data}"); };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        lock (processes) processes.Add(process);
        return process;
    }

    static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }

    public void Dispose()
    {
        over.Cancel();
        lock (processes)
            foreach (var p in processes)
            {
                try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                p.Dispose();
            }
        over.Dispose();
    }
}
