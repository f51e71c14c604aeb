// Test scaffolding: a scratch directory, a small job of world size 2 over a synthetic corpus, and short-hand calls
// into its gRPC service as ranks would make them (peer "test"), every wait bounded.
using Job;
using Coordinator.Protocol;
using Data;
using ProtoFile = Coordinator.Protocol.CheckpointFile;
using StepMetrics = Coordinator.Protocol.StepMetrics;
using FailureClass = Coordinator.Protocol.FailureClass;

namespace Coordinator.UnitTests;

/// <summary>A per-test scratch directory under the system temp folder, deleted on dispose.</summary>
internal sealed class TempDir : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "coordinator-tests-" + Guid.NewGuid().ToString("N"));

    public TempDir() => Directory.CreateDirectory(Path);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { }
    }
}

internal static class Waits
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    public static Task<T> Within<T>(this Task<T> task) => task.WaitAsync(Timeout);

    public static Task Within(this Task task) => task.WaitAsync(Timeout);
}

/// <summary>A JobState of world size 2 (job "test-job"), logging to a file in its out dir.</summary>
internal sealed class TestJob : IDisposable
{
    public const string JobId = "test-job";
    public const string Token = "0123456789abcdef-test-token";
    public const string ConfigJson = """{"model":{"layers":2},"data":{"sequence_length":16},"train":{"steps":10}}""";
    public const int World = 2, MicroBatch = 4, MicroBatches = 2, Steps = 10;
    public const string Peer = "test";

    static readonly SequencePlan Plan = new([new SyntheticCorpus(vocabSize: 64, tokenCount: 20_000, seed: 1)], 16);

    readonly TempDir? ownedDir;

    /// <param name="options">The job section (its Id is set to JobId); null: the defaults.</param>
    /// <param name="outDir">The run's out dir, owned by the caller; null: a fresh one owned by this job.</param>
    /// <param name="divergence">The divergence rules; null: the defaults.</param>
    /// <param name="steps">train.steps of the job.</param>
    public TestJob(JobOptions? options = null, string? outDir = null, DivergenceOptions? divergence = null, long steps = Steps)
    {
        if (outDir is null)
        {
            ownedDir = new TempDir();
            outDir = ownedDir.Path;
        }
        OutDir = outDir;
        LogPath = System.IO.Path.Combine(outDir, "coordinator.log");
        Log = new JobLog(null, LogPath);
        try
        {
            State = new JobState(SpecFor(outDir, options ?? new JobOptions(), steps) with { Divergence = divergence ?? new DivergenceOptions() }, Log);
            Service = new CoordinatorService(State);
        }
        catch
        {
            Log.Dispose();
            ownedDir?.Dispose();
            throw;
        }
    }

    public string OutDir { get; }
    public string LogPath { get; }
    public JobLog Log { get; }
    public JobState State { get; }
    /// <summary>The gRPC layer over State, called without the network: proto requests in, replies or RpcExceptions out.</summary>
    public CoordinatorService Service { get; }

    public static BatchPlan NewBatchPlan() => new(Plan, MicroBatch * MicroBatches, seed: 7);

    public static JobSpec SpecFor(string outDir, JobOptions options, long steps = Steps) =>
        new(JobId, Token, options with { Id = JobId, WorldSize = World }, ConfigJson, NewBatchPlan(), MicroBatches, steps, outDir)
        {
            ResumeConflict = _ => null, // any checkpoint may be continued: RunConfigTests test the configuration's own check
        };

    /// <summary>The log file as written so far.</summary>
    public string LogText()
    {
        using var stream = new FileStream(LogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return new StreamReader(stream).ReadToEnd();
    }

    public static RegisterRequest RegisterRequest(int rank, int pid = 0) =>
        new() { JobId = JobId, RequestedRank = rank, WorldSize = World, Host = "localhost", Pid = pid == 0 ? 1000 + rank : pid };

    public Task<RegisterReply> Register(int rank, CancellationToken cancel = default) =>
        Service.Register(RegisterRequest(rank), Peer, cancel);

    /// <summary>Registers ranks 0 and 1 of the current generation; returns their replies in rank order.</summary>
    public Task<RegisterReply[]> RegisterAll() => Task.WhenAll(Register(0), Register(1)).Within();

    public HeartbeatReply Heartbeat(int generation, int rank, long step = 0) =>
        Service.Heartbeat(new HeartbeatRequest { JobId = JobId, Generation = generation, Rank = rank, Step = step }, Peer);

    public void ReportFailure(int generation, int rank, string message, string key = "", FailureClass failureClass = FailureClass.Unspecified) =>
        Service.ReportFailure(new FailureRequest { JobId = JobId, Generation = generation, Rank = rank, Message = message, Key = key, FailureClass = failureClass }, Peer);

    public BatchesReply Batches(int generation, int rank, long firstStep, int count) =>
        Service.Batches(new BatchesRequest { JobId = JobId, Generation = generation, Rank = rank, FirstStep = firstStep, Count = count }, Peer);

    public CommitReply Commit(int generation, int rank, long step, params ProtoFile[] files) =>
        Service.Commit(new CommitRequest { JobId = JobId, Generation = generation, Rank = rank, Step = step, Files = { files } }, Peer);

    /// <summary>A heartbeat that reports logged steps: (step, train loss, max |logit|) each, the other metrics fixed.</summary>
    public HeartbeatReply Report(int generation, int rank, params (long Step, double Loss, double MaxAbsLogit)[] steps) =>
        Service.Heartbeat(new HeartbeatRequest
        {
            JobId = JobId, Generation = generation, Rank = rank, Step = steps.Length > 0 ? steps[^1].Step : 0,
            Metrics = { steps.Select(s => new StepMetrics { Step = s.Step, TrainLoss = s.Loss, MaxAbsLogit = s.MaxAbsLogit, MuNorm = 1, LearningRate = 1e-3, StepSeconds = 0.01 }) },
        }, Peer);

    public FinishReply Finish(int generation, int rank, long step, double trainLoss, bool stopped = false) =>
        Service.Finish(new FinishRequest { JobId = JobId, Generation = generation, Rank = rank, Step = step, TrainLoss = trainLoss, Stopped = stopped }, Peer);

    /// <summary>Writes a rank's file into the checkpoint directory of `step` and returns its manifest entry.</summary>
    public ProtoFile WriteCheckpointFile(long step, string name, int bytes)
    {
        string dir = State.Catalog.DirectoryFor(step);
        Directory.CreateDirectory(dir);
        string path = System.IO.Path.Combine(dir, name);
        var content = new byte[bytes];
        new Random((int)step * 31 + name.Length).NextBytes(content);
        File.WriteAllBytes(path, content);
        var described = CheckpointCatalog.Describe(path);
        return new ProtoFile { Name = described.Name, Bytes = described.Bytes, Sha256 = described.Sha256 };
    }

    /// <summary>Both ranks of `generation` write their part of the checkpoint at `step` and commit it; returns the
    /// replies once the rotation it started is done (it runs on a task of its own).</summary>
    public (CommitReply Rank0, CommitReply Rank1) CommitBoth(int generation, long step)
    {
        var first = Commit(generation, 0, step, WriteCheckpointFile(step, "rank0.bin", 100));
        var second = Commit(generation, 1, step, WriteCheckpointFile(step, "rank1.bin", 120));
        Assert.True(State.Rotation.Wait(Waits.Timeout), "the rotation did not finish");
        return (first, second);
    }

    public void Dispose()
    {
        State.Dispose();
        Log.Dispose();
        ownedDir?.Dispose();
    }
}
