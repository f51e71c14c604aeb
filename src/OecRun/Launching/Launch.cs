// The coordinator as a command: a whole job on this machine (train), or the coordinator alone for a cluster.
using System.Net;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Coordinator;
using Data;
using Job;
using Rank.Configuration;
using Rank.Training;

namespace OecRun.Launching;

public static class Launch
{
    /// <summary>This program's own `rank` command, whether it runs as an app host or under `dotnet`.</summary>
    public static ProcessCommand SelfRankCommand() => SelfCommand("rank");

    /// <summary>This program with the given arguments, whether it runs as an app host or under `dotnet`.</summary>
    public static ProcessCommand SelfCommand(params string[] arguments)
    {
        string program = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell this program's path");
        return Path.GetFileNameWithoutExtension(program) == "dotnet"
            ? new ProcessCommand(program, [typeof(Launch).Assembly.Location, .. arguments])
            : new ProcessCommand(program, arguments);
    }

    /// <summary>Coordinator plus job.world_size rank processes of <paramref name="rankCommand"/>; the job's exit code.
    /// The first interrupt stops the job at a checkpoint. <paramref name="hosted"/> sees the coordinator's addresses before
    /// any rank starts.</summary>
    public static async Task<int> Local(RunConfig config, ProcessCommand rankCommand, TextWriter console, CancellationToken interrupt,
        Action<JobState>? created = null, Action<int, int, System.Diagnostics.Process>? started = null, Action<CoordinatorHost>? hosted = null)
    {
        // The ranks run here, rank r on cuda:r with NCCL (on the GPUs they share with tcp): a machine without them fails
        // now, once, not in every rank and restart.
        if (config.Train.Device == "cuda") ComputeDevice.Select("cuda", localRank: config.Job.Backend == Backend.Nccl ? config.Job.WorldSize - 1 : 0);
        using var job = Create(config, Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24)), console, out var log, out var data, out var runLock);
        using var _ = log;
        using var __ = data;
        using var ___ = runLock;
        created?.Invoke(job);
        await using var host = await CoordinatorHost.StartAsync(job, log, IPAddress.Loopback, 0);
        hosted?.Invoke(host);
        var launcher = new LocalLauncher(job, log, rankCommand, host.Address) { Started = started };
        var outcome = await launcher.RunAsync(interrupt);
        console.WriteLine($"job {job.Spec.JobId}: {outcome.Phase.ToString().ToLowerInvariant()}: {outcome.Reason} (restarts: {job.Restarts}; divergence rollbacks: {job.Rollbacks}; log: {Path.Combine(job.Spec.OutDir, "coordinator.log")})");
        return outcome.ExitCode;
    }

    /// <summary>The coordinator alone, for ranks started elsewhere (Kubernetes): listens at <paramref name="listen"/>. With
    /// <paramref name="linger"/> it keeps serving health, /metrics and the live page after the job ended by itself,
    /// until SIGTERM or Ctrl+C, so that it can run as a Deployment (whose pods are restarted whenever they exit); a job
    /// stopped by such a signal ends the program once stopped.</summary>
    public static async Task<int> Cluster(RunConfig config, IPAddress listen, int port, int metricsPort, TextWriter console, bool linger = false)
    {
        string token = Environment.GetEnvironmentVariable("OEC_JOB_TOKEN") is { Length: >= 16 } t ? t
            : throw new ArgumentException("OEC_JOB_TOKEN must be set to the job token (at least 16 characters) that ranks will present");
        using var job = Create(config, token, console, out var log, out var data, out var runLock);
        using var _ = log;
        using var __ = data;
        using var ___ = runLock;
        // SIGTERM (Kubernetes deleting the pod) or Ctrl+C: stop the job at a checkpoint; a second signal ends at once.
        int signals = 0;
        var released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void Stop(PosixSignalContext signal)
        {
            bool over = job.Outcome.IsCompleted;
            signal.Cancel = over || Interlocked.Increment(ref signals) == 1;
            if (over) released.TrySetResult(); // lingering: the signal ends the program
            else job.RequestStop(signal.Signal.ToString());
        }
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Stop);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Stop);
        await using var host = await CoordinatorHost.StartAsync(job, log, listen, port, metricsPort);
        var outcome = await job.Outcome;
        await Task.Delay(TimeSpan.FromSeconds(config.Job.HeartbeatIntervalS * 2)); // lets the ranks hear the end
        if (linger && Volatile.Read(ref signals) == 0) // a signal that stopped the job (a pod being deleted) also ends the program
        {
            log.Info($"job {job.Spec.JobId} {outcome.Phase.ToString().ToLowerInvariant()}; --linger: still serving health, /metrics and the live page until SIGTERM");
            await released.Task;
        }
        return outcome.ExitCode;
    }

    /// <summary>The job, its log and data, and the run directory's lock, held from before the log is opened.</summary>
    static JobState Create(RunConfig config, string token, TextWriter console, out JobLog log, out TrainingData data, out RunDirectoryLock runLock)
    {
        string outDir = config.Run.OutDir!;
        string id = config.Job.Id.Length > 0 ? config.Job.Id
            : Environment.GetEnvironmentVariable("OEC_JOB_ID") is { Length: > 0 } e ? e
            // A resumed run keeps the id its checkpoints were taken under: one Prometheus series across stops and resumes.
            : config.Job.Resume != ResumeMode.No && new CheckpointCatalog(Path.Combine(outDir, "checkpoints"), _ => { }).NewestJobId() is { } kept ? kept
            : $"{Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(outDir)))}-{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(3))}";
        config = config with { Job = config.Job with { Id = id } }; // the id is checked with the job's spec (JobSpec.Validate)
        var train = config.Train;
        data = new TrainingData(config.Data, train.SequenceLength);
        var plan = new BatchPlan(data.Train, train.BatchSize * train.GradAccum, train.Seed);
        var spec = new JobSpec(id, token, config.Job, config.ToJson(), plan, train.GradAccum, train.Steps, outDir)
        {
            Divergence = config.Divergence,
            ResumeConflict = config.ResumeConflict,
            UntrainedLoss = Math.Log(config.Model.PaddedVocab(config.Data.ResolvedVocabSize)), // ln V: a uniform prediction
        };
        // A configuration error is told before the run directory or its log exists; a job refused after that (a resume
        // with nothing to resume from) removes the directory it created rather than leave an empty run behind.
        try { spec.Validate(); }
        catch { data.Dispose(); throw; }
        bool created = !Directory.Exists(outDir);
        try { runLock = RunDirectoryLock.Acquire(outDir); }
        catch { data.Dispose(); throw; }
        log = new JobLog(console, Path.Combine(outDir, "coordinator.log"));
        try
        {
            return new JobState(spec, log);
        }
        catch
        {
            log.Dispose();
            data.Dispose();
            runLock.Dispose();
            if (created) Directory.Delete(outDir, recursive: true);
            throw;
        }
    }
}
