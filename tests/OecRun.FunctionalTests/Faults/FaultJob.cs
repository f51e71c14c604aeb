// The job every fault trial runs, its uninterrupted reference run, and what a trial measures: whether the faulty run
// ended with the reference's model to the bit, and how long the coordinator took to see the fault and to recover.
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Coordinator;
using Job;
using OecRun.Launching;
using Rank.Configuration;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests.Faults;

public static partial class FaultJob
{
    /// <summary>2 ranks, 80 steps, a checkpoint every 20 (all kept), heartbeats every 0.2 s, silence for 5 s fails a rank.</summary>
    public static readonly string[] Settings =
    [
        "job.id=faults", "train.steps=80", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=40",
        "train.eval_batches=2", "train.log_every=5", "train.threads=1", "data.synthetic_tokens=30000",
        "job.world_size=2", "job.checkpoint_every=20", "job.keep_checkpoints=10", "job.heartbeat_interval_s=0.2",
        "job.heartbeat_timeout_s=5", "job.max_restarts=3",
    ];

    public const int Steps = 80;
    public const double HeartbeatTimeoutS = 5;

    /// <summary>Trials per randomised fault: OEC_FAULT_TRIALS, else 2 (the suite's share of CI time).</summary>
    public static int Trials => int.TryParse(Environment.GetEnvironmentVariable("OEC_FAULT_TRIALS"), out int n) && n > 0 ? n : 2;

    public static RunConfig Config(string outDir, params string[] more) => RunConfig.Load(null, [.. Settings, .. more, "run.out_dir=" + outDir]);

    /// <summary>Asserts that a run's final model equals the reference's, parameter for parameter, to the bit.</summary>
    public static void AssertSameModel(string referenceDir, string runDir) => JobProcessTests.AssertSameModel(Config(runDir), referenceDir, runDir);

    /// <summary>Runs a job locally and applies <paramref name="fault"/> to the victim rank's first process once that rank
    /// has reported <paramref name="atStep"/>; what the job printed goes to <paramref name="log"/>.</summary>
    public static async Task<InjectedFault> RunLocal(RunConfig config, int victim, long atStep, Action<Process> fault, ITestOutputHelper log)
    {
        var console = new StringWriter();
        JobState? job = null;
        Task<(DateTime, long, int)>? injector = null;
        int exit = await Launch.Local(config, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None,
            created: j => job = j,
            started: (generation, rank, process) =>
            {
                if (generation != 1 || rank != victim) return;
                injector = Task.Run(async () =>
                {
                    var clock = Stopwatch.StartNew();
                    while (job!.Ranks().FirstOrDefault(r => r.Rank == victim)?.Step is not long step || step < atStep)
                    {
                        if (clock.Elapsed > TimeSpan.FromMinutes(2)) throw new TimeoutException($"rank {victim} did not reach step {atStep}");
                        await Task.Delay(10);
                    }
                    long at = job.Ranks().First(r => r.Rank == victim).Step;
                    fault(process);
                    return (DateTime.UtcNow, at, process.Id);
                });
            }).WaitAsync(TimeSpan.FromMinutes(5));
        log.WriteLine(console.ToString());
        var (when, step, pid) = await (injector ?? throw new InvalidOperationException("the victim never started")).WaitAsync(TimeSpan.FromMinutes(1));
        return new InjectedFault(exit, job!, when, step, pid, console.ToString());
    }

    /// <summary>Whether a run's final model equals the reference's to the bit (for the figures; tests assert with AssertSameModel).</summary>
    public static bool SameModel(string referenceDir, string runDir)
    {
        try { AssertSameModel(referenceDir, runDir); return true; }
        catch (Exception e) when (e is Xunit.Sdk.XunitException or IOException) { return false; }
    }

    /// <summary>The time of the first coordinator.log line matching <paramref name="pattern"/> at or after
    /// <paramref name="since"/> (the log's clock is UTC time of day, HH:mm:ss.fff), or null.</summary>
    public static DateTime? LoggedAt(string outDir, string pattern, DateTime since)
    {
        foreach (string line in File.ReadLines(Path.Combine(outDir, "coordinator.log")))
        {
            var m = LogLine().Match(line);
            if (!m.Success || !Regex.IsMatch(m.Groups[2].Value, pattern)) continue;
            var at = since.Date + TimeSpan.ParseExact(m.Groups[1].Value, @"hh\:mm\:ss\.fff", CultureInfo.InvariantCulture);
            if (at < since - TimeSpan.FromHours(12)) at += TimeSpan.FromDays(1); // the log crossed midnight
            if (at >= since - TimeSpan.FromMilliseconds(1)) return at;
        }
        return null;
    }

    /// <summary>Seconds from a fault to the generation's failure in the log and to the next generation's start.</summary>
    public static Recovery Timed(string outDir, DateTime fault)
    {
        var detected = LoggedAt(outDir, @"^generation \d+ failed", fault);
        var resumed = LoggedAt(outDir, @"^generation \d+: all \d+ ranks registered", detected ?? fault);
        return new((detected - fault)?.TotalSeconds ?? double.NaN, (resumed - fault)?.TotalSeconds ?? double.NaN);
    }

    /// <summary>Writes a trial's figures to OEC_FAULT_REPORT (one JSON line each) when set, for docs/reliability.md.</summary>
    public static void Report(string fault, int trial, bool recovered, bool bitwiseEqual, Recovery times, string detail)
    {
        if (Environment.GetEnvironmentVariable("OEC_FAULT_REPORT") is not { Length: > 0 } path) return;
        var line = System.Text.Json.JsonSerializer.Serialize(new
        {
            fault, trial, recovered, bitwise_equal = bitwiseEqual, detection_s = Seconds(times.DetectionS), recovery_s = Seconds(times.RecoveryS), detail,
        });
        lock (ReportGate) File.AppendAllText(path, line + "\n");
    }

    static readonly Lock ReportGate = new();

    static double? Seconds(double s) => double.IsNaN(s) ? null : Math.Round(s, 3); // JSON has no NaN: not measured

    [GeneratedRegex(@"^(\d\d:\d\d:\d\d\.\d{3}) coordinator: (.*)$")]
    private static partial Regex LogLine();
}

/// <summary>A job run with a fault: its exit code and state, when the fault hit (UTC) at which step of the victim, the
/// victim's pid, and what the job printed.</summary>
public sealed record InjectedFault(int Exit, JobState Job, DateTime At, long Step, int Pid, string Console);

/// <summary>Seconds from the fault until the coordinator logged the failure, and until the next generation trained.</summary>
public readonly record struct Recovery(double DetectionS, double RecoveryS);

/// <summary>The uninterrupted run of <see cref="FaultJob.Settings"/>, made once for every fault test class that compares with it.</summary>
public sealed class FaultReferenceFixture : IDisposable
{
    readonly TempDirectory temp = new();
    readonly Lazy<Task<string>> run;

    public FaultReferenceFixture() => run = new(async () =>
    {
        string dir = temp.File("reference");
        int exit = await Launch.Local(FaultJob.Config(dir), Launch.SelfRankCommand(), TextWriter.Null, CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(5));
        Assert.Equal(ExitCodes.Success, exit);
        return dir;
    });

    /// <summary>The reference run's directory: model.safetensors, metrics.jsonl and every checkpoint.</summary>
    public Task<string> RunDir => run.Value;

    public void Dispose() => temp.Dispose();
}

[CollectionDefinition(Name)]
public sealed class FaultCollection : ICollectionFixture<FaultReferenceFixture>
{
    public const string Name = "faults";
}
