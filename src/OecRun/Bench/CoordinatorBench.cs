// The coordinator under N simulated ranks: registration time, heartbeat latency, and the coordinator's own CPU and memory.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Coordinator.Protocol;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using OecRun.Launching;

namespace OecRun.Bench;

/// <summary>
/// Starts `oecrun coordinator` as a child process (so that /proc shows its CPU alone), registers N simulated ranks with
/// it over the generated async client, then lets each heartbeat once an interval (1 s by default; job.heartbeat_interval_s
/// of the coordinator too), staggered over the interval. The first WarmupS seconds are warm-up (the JIT tiers the hot
/// paths up); latencies and CPU are of the steady window after them. A longer interval serves many ranks at the
/// heartbeat rate of fewer: the coordinator's per-rank structures at their size, at a rate the bench machine can drive.
/// </summary>
public static class CoordinatorBench
{
    const int RanksPerChannel = 64;         // HTTP/2 multiplexes; Kestrel allows 100 concurrent streams per connection
    const int WarmupS = 5;                  // seconds of heartbeats before the steady window
    const double ClockTicksPerSecond = 100; // /proc/<pid>/stat counts utime and stime in USER_HZ, 100 on Linux (getconf CLK_TCK)
    static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(10), RegisterTimeout = TimeSpan.FromSeconds(120);

    /// <param name="port">The coordinator's port; 0 picks a free one.</param>
    /// <param name="interval">Seconds between a rank's heartbeats.</param>
    public static int Run(int ranks, double seconds, TextWriter output, int port = 0, double interval = 1)
    {
        if (ranks < 1 || ranks > Job.JobOptions.MaxWorldSize)
            throw new ArgumentException($"--ranks {ranks}: must be in [1, {Job.JobOptions.MaxWorldSize}] (job.world_size's range)");
        if (!(seconds >= 1)) throw new ArgumentException($"--seconds {seconds}: must be at least 1");
        if (port < 0 || port > 65535) throw new ArgumentException($"--port {port}: must be in [0, 65535]");
        if (!(interval >= 0.01 && interval <= 30)) throw new ArgumentException($"--interval {interval}: must be in [0.01, 30] seconds");
        if (!OperatingSystem.IsLinux()) throw new InvalidOperationException("bench-coordinator reads /proc: Linux only");
        string dir = Directory.CreateTempSubdirectory("oec-bench-coordinator-").FullName;
        string token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));
        if (port == 0) port = FreePort();
        var tail = new ConcurrentQueue<string>(); // the child's last lines, shown if it fails
        var said = new TaskCompletionSource();    // completed when the child logs that it listens
        using var coordinator = StartCoordinator(ranks, interval, port, token, dir, tail, said);
        try
        {
            WaitUntilListening(coordinator, port, said.Task, TimeSpan.FromSeconds(60), tail);
            var r = Measure(ranks, seconds, interval, new Uri($"http://127.0.0.1:{port}"), token, coordinator.Id).GetAwaiter().GetResult();
            long calls = ranks + r.Heartbeats;
            output.WriteLine($"coordinator (pid {coordinator.Id}) under {ranks} simulated ranks over {r.Connections} HTTP/2 connections " +
                             $"({r.Channels} channels of up to {RanksPerChannel} ranks); heartbeat every {interval:0.###} s ({ranks / interval:0} a second), {seconds:0.#} s steady window " +
                             $"after {WarmupS} s warm-up; {Environment.ProcessorCount} cores shared by coordinator and simulated ranks");
            output.WriteLine($"calls: {ranks} registrations, {r.Heartbeats} heartbeats ({r.SteadyHeartbeats} in the steady window); errors: {r.Errors}");
            output.WriteLine();
            output.WriteLine("| ranks | connections | registration (s) | steady heartbeats | errors | p50 (ms) | p99 (ms) | max (ms) | coordinator CPU (% of a core) | CPU per heartbeat (ms) | coordinator RSS (MB) | bench CPU (% of a core) |");
            output.WriteLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
            output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"| {ranks} | {r.Connections} | {r.RegistrationS:F2} | {r.SteadyHeartbeats} | {r.Errors} | {r.P50Ms:F2} | {r.P99Ms:F2} | {r.MaxMs:F2} | " +
                $"{r.CoordinatorCpuS / r.WindowS * 100:F1} | {r.CoordinatorCpuS * 1e3 / Math.Max(1, r.SteadyHeartbeats):F3} | {r.RssMb:F0} | {r.BenchCpuS / r.WindowS * 100:F1} |"));
            foreach (var (kind, count) in r.ErrorKinds.OrderByDescending(e => e.Value)) output.WriteLine($"error: {count} x {kind}");
            if (r.Errors > calls / 1000.0)
                throw new InvalidOperationException($"{r.Errors} of {calls} calls failed (more than 0.1%); coordinator's last lines:\n{string.Join('\n', tail)}");
            return 0;
        }
        finally
        {
            try { coordinator.Kill(entireProcessTree: true); coordinator.WaitForExit(10_000); }
            catch (InvalidOperationException) { } // it had already exited
            try { Directory.Delete(dir, recursive: true); }
            catch (IOException) { }
        }
    }

    sealed record Result(int Channels, int Connections, double RegistrationS, long Heartbeats, long SteadyHeartbeats, long Errors,
        IReadOnlyDictionary<string, int> ErrorKinds, double P50Ms, double P99Ms, double MaxMs, double WindowS, double CoordinatorCpuS,
        double BenchCpuS, double RssMb);

    static async Task<Result> Measure(int ranks, double seconds, double interval, Uri address, string token, int pid)
    {
        int channelCount = (ranks + RanksPerChannel - 1) / RanksPerChannel;
        // One connection per channel: without EnableMultipleHttp2Connections a channel never opens a second one.
        var channels = Enumerable.Range(0, channelCount).Select(_ => GrpcChannel.ForAddress(address,
            new GrpcChannelOptions { HttpHandler = new SocketsHttpHandler { EnableMultipleHttp2Connections = false } })).ToArray();
        try
        {
            var clients = channels.Select(c => new Coordinator.Protocol.Coordinator.CoordinatorClient(c.Intercept(m =>
            {
                m.Add("authorization", $"Bearer {token}");
                return m;
            }))).ToArray();
            var errorKinds = new ConcurrentDictionary<string, int>();
            void Error(string kind) => errorKinds.AddOrUpdate(kind, 1, (_, n) => n + 1);

            // Registration: all at once; the coordinator answers every call when the last rank is in.
            var clock = Stopwatch.StartNew();
            using var giveUp = new CancellationTokenSource();
            var replies = await Task.WhenAll(Enumerable.Range(0, ranks).Select(async rank =>
            {
                try
                {
                    return await clients[rank / RanksPerChannel].RegisterAsync(new RegisterRequest
                    {
                        JobId = "bench", RequestedRank = rank, WorldSize = ranks, Host = $"sim-{rank}", Pid = Environment.ProcessId,
                    }, deadline: DateTime.UtcNow + RegisterTimeout, cancellationToken: giveUp.Token);
                }
                catch (RpcException e)
                {
                    if (e.StatusCode != StatusCode.Cancelled) Error($"Register {e.StatusCode}: {e.Status.Detail}");
                    giveUp.Cancel(); // the world can no longer complete: release the others
                    return null;
                }
            }));
            if (replies.Any(r => r is null))
                throw new InvalidOperationException($"registration failed: {string.Join("; ", errorKinds.Select(e => $"{e.Value} x {e.Key}"))}");
            double registration = clock.Elapsed.TotalSeconds;

            // Heartbeats: rank r beats at t0 + (r/N + k) interval; those before t0 + WarmupS are warm-up, the steady window is
            // [t0 + WarmupS, t0 + WarmupS + seconds).
            var t0 = clock.Elapsed;
            var end = t0 + TimeSpan.FromSeconds(WarmupS + seconds);
            long heartbeats = 0, errors = 0;
            var beating = Enumerable.Range(0, ranks).Select(async rank =>
            {
                var latencies = new List<double>();
                var reply = replies[rank]!;
                for (int k = 0; ; k++)
                {
                    var due = t0 + TimeSpan.FromSeconds(((double)rank / ranks + k) * interval);
                    if (due >= end) return latencies;
                    var wait = due - clock.Elapsed;
                    if (wait > TimeSpan.Zero) await Task.Delay(wait);
                    long before = Stopwatch.GetTimestamp();
                    try
                    {
                        var answer = await clients[rank / RanksPerChannel].HeartbeatAsync(new HeartbeatRequest
                        {
                            JobId = "bench", Generation = reply.Generation, Rank = reply.Rank, Step = k, Metrics = { Metrics(k) },
                        }, deadline: DateTime.UtcNow + CallTimeout);
                        if (answer.Command != Command.Continue) { Error($"Heartbeat answered {answer.Command}: {answer.Reason}"); Interlocked.Increment(ref errors); }
                    }
                    catch (RpcException e) { Error($"Heartbeat {e.StatusCode}: {e.Status.Detail}"); Interlocked.Increment(ref errors); }
                    Interlocked.Increment(ref heartbeats);
                    if (due >= t0 + TimeSpan.FromSeconds(WarmupS)) latencies.Add(Stopwatch.GetElapsedTime(before).TotalMilliseconds); // ms, failed calls included
                }
            }).ToArray();

            // CPU of both processes across the steady window: from t0 + WarmupS until the last heartbeat has returned.
            await Task.Delay(t0 + TimeSpan.FromSeconds(WarmupS) - clock.Elapsed);
            var (windowStart, cpuStart, benchStart) = (clock.Elapsed, CpuSeconds(pid), Process.GetCurrentProcess().TotalProcessorTime);
            var all = (await Task.WhenAll(beating)).SelectMany(l => l).Order().ToArray();
            var (windowEnd, cpuEnd, benchEnd) = (clock.Elapsed, CpuSeconds(pid), Process.GetCurrentProcess().TotalProcessorTime);
            double Percentile(double p) => all.Length == 0 ? double.NaN : all[Math.Clamp((int)Math.Ceiling(p * all.Length) - 1, 0, all.Length - 1)];
            return new Result(channelCount, Connections(address.Port), registration, heartbeats, all.Length, errors, errorKinds,
                Percentile(0.50), Percentile(0.99), Percentile(1.0), (windowEnd - windowStart).TotalSeconds, cpuEnd - cpuStart,
                (benchEnd - benchStart).TotalSeconds, RssMegabytes(pid));
        }
        finally
        {
            foreach (var c in channels) c.Dispose();
        }
    }

    /// <summary>What a rank's heartbeat carries: the last logged step's metrics (plausible values for a small model).</summary>
    static StepMetrics Metrics(int step) => new()
    {
        Step = step, TrainLoss = 3.2 - 1e-4 * step, LearningRate = 6e-4, GradNorm = 0.9, TokensPerSecond = 48_000, StepSeconds = 0.021,
        MuNorm = 2.5e-8, MeanLogit = 4e-9, LogitStd = 2.1, MaxAbsLogit = 21.4, MeanLogZ = 6.3, RLog = 0.05,
    };

    static Process StartCoordinator(int ranks, double interval, int port, string token, string dir, ConcurrentQueue<string> tail, TaskCompletionSource said)
    {
        // Enough synthetic tokens for 20 batches of N sequences of 16 (+1) tokens: the coordinator cuts N sequences a step.
        var self = Launch.SelfCommand("coordinator", "--port", $"{port}", $"job.world_size={ranks}", "job.id=bench", $"job.heartbeat_interval_s={interval.ToString(CultureInfo.InvariantCulture)}",
            "job.heartbeat_timeout_s=60", "job.rendezvous_timeout_s=300", $"train.batch_size={ranks}", "train.sequence_length=16",
            "train.steps=1000000", "train.warmup_steps=0", $"data.synthetic_tokens={20L * ranks * 17 + 1000}", $"run.out_dir={dir}");
        var info = new ProcessStartInfo(self.FileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in self.Arguments) info.ArgumentList.Add(a);
        info.Environment["OEC_JOB_TOKEN"] = token;
        var child = Process.Start(info) ?? throw new InvalidOperationException($"could not start {self.FileName}");
        DataReceivedEventHandler keep = (_, e) =>
        {
            if (e.Data is null) return;
            if (e.Data.Contains("coordinator: listening on", StringComparison.Ordinal)) said.TrySetResult();
            tail.Enqueue(e.Data);
            while (tail.Count > 20) tail.TryDequeue(out string? _);
        };
        child.OutputDataReceived += keep; // drained, or the child would block on a full pipe
        child.ErrorDataReceived += keep;
        child.BeginOutputReadLine();
        child.BeginErrorReadLine();
        return child;
    }

    /// <summary>Ready once the child has said "listening on" and the port accepts a connection: the port alone could be
    /// another program's (an explicit --port), which would leave the coordinator failing to bind.</summary>
    static void WaitUntilListening(Process child, int port, Task said, TimeSpan timeout, ConcurrentQueue<string> tail)
    {
        var clock = Stopwatch.StartNew();
        while (!(said.IsCompleted && Accepts(port)))
        {
            if (child.HasExited)
                throw new InvalidOperationException($"the coordinator exited with code {child.ExitCode} before listening:\n{string.Join('\n', tail)}");
            if (clock.Elapsed > timeout)
                throw new InvalidOperationException($"the coordinator did not listen on port {port} within {timeout.TotalSeconds:0} s:\n{string.Join('\n', tail)}");
            Thread.Sleep(100);
        }
    }

    static bool Accepts(int port)
    {
        try
        {
            using var probe = new TcpClient();
            probe.Connect(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException) { return false; }
    }

    static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port; // another program could take it before the child binds: unlikely, and it would fail clearly
    }

    /// <summary>utime + stime of a process, in seconds (fields 14 and 15 of /proc/pid/stat, counted after the ")" of its name).</summary>
    static double CpuSeconds(int pid)
    {
        string stat = File.ReadAllText($"/proc/{pid}/stat");
        var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' '); // fields[0] is field 3, the state
        return (long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture)) / ClockTicksPerSecond;
    }

    /// <summary>Resident memory in MB (VmRSS of /proc/pid/status, given in kB).</summary>
    static double RssMegabytes(int pid) =>
        File.ReadLines($"/proc/{pid}/status").Where(l => l.StartsWith("VmRSS:", StringComparison.Ordinal))
            .Select(l => long.Parse(l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) / 1024.0).First();

    /// <summary>Established TCP connections whose local port is the coordinator's, i.e. its side of each connection
    /// (/proc/net/tcp: local address as hex ip:port, state 01 = ESTABLISHED).</summary>
    static int Connections(int port) =>
        new[] { "/proc/net/tcp", "/proc/net/tcp6" }.Where(File.Exists).SelectMany(f => File.ReadLines(f).Skip(1))
            .Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Count(f => f[3] == "01" && int.Parse(f[1][(f[1].LastIndexOf(':') + 1)..], NumberStyles.HexNumber, CultureInfo.InvariantCulture) == port);
}
