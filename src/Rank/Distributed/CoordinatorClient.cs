// The rank's side of the coordinator contract: gRPC calls with the job token and a deadline on every one.
using Collectives;
using Coordinator.Protocol;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;

namespace Rank.Distributed;

/// <summary>Also the collectives' rendezvous (IRendezvous), so the TCP ring and NCCL bootstrap through the coordinator.</summary>
public sealed class CoordinatorClient : IRendezvous, IDisposable
{
    static readonly TimeSpan CallTimeout = TimeSpan.FromSeconds(10);
    const int Prefetch = 64; // steps of assignments fetched per call

    readonly GrpcChannel channel;
    readonly Coordinator.Protocol.Coordinator.CoordinatorClient client;
    readonly Dictionary<long, long[]> rows = new();

    public CoordinatorClient(Uri address, string jobId, string token)
    {
        Address = address;
        JobId = jobId;
        channel = GrpcChannel.ForAddress(address, new GrpcChannelOptions
        {
            MaxReceiveMessageSize = 16 << 20,
            HttpHandler = new SocketsHttpHandler { ConnectTimeout = CallTimeout, EnableMultipleHttp2Connections = true },
        });
        client = new(channel.Intercept(metadata =>
        {
            metadata.Add("authorization", $"Bearer {token}");
            return metadata;
        }));
    }

    public Uri Address { get; }
    public string JobId { get; }
    public int Generation { get; private set; }
    public int Rank { get; private set; } = -1;

    static DateTime Deadline(TimeSpan timeout) => DateTime.UtcNow + timeout;

    /// <summary>Blocks until the generation's world is complete (the coordinator's job.rendezvous_timeout_s bounds it).
    /// A coordinator not answering yet (a rank started first, or the coordinator restarting) is asked again, after
    /// 0.25 s, 0.5 s, ... up to 5 s between tries, for <paramref name="unreachableFor"/>; then the last Unavailable
    /// is thrown. Any other refusal is thrown at once.</summary>
    public RegisterReply Register(int requestedRank, int worldSize, string host, TimeSpan timeout, TimeSpan unreachableFor)
    {
        var request = new RegisterRequest { JobId = JobId, RequestedRank = requestedRank, WorldSize = worldSize, Host = host, Pid = Environment.ProcessId };
        var giveUp = DateTime.UtcNow + unreachableFor;
        for (var pause = TimeSpan.FromSeconds(0.25); ; pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.FromSeconds(5).Ticks)))
        {
            try
            {
                var reply = client.Register(request, deadline: Deadline(timeout));
                (Generation, Rank) = (reply.Generation, reply.Rank);
                return reply;
            }
            catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable && DateTime.UtcNow < giveUp)
            {
                Thread.Sleep(TimeSpan.FromTicks(Math.Clamp((giveUp - DateTime.UtcNow).Ticks, 0, pause.Ticks)));
            }
        }
    }

    /// <summary>This rank's sequences of a step, fetched ahead in blocks.</summary>
    public long[] Rows(long step)
    {
        if (!rows.TryGetValue(step, out var mine))
        {
            rows.Clear();
            var reply = client.GetBatches(new BatchesRequest { JobId = JobId, Generation = Generation, Rank = Rank, FirstStep = step, Count = Prefetch },
                deadline: Deadline(CallTimeout));
            foreach (var s in reply.Steps) rows[s.Step] = s.Sequences.ToArray();
            if (!rows.TryGetValue(step, out mine)) throw new InvalidOperationException($"the coordinator sent no sequences for step {step}");
        }
        return mine;
    }

    public HeartbeatReply Heartbeat(long step, IEnumerable<StepMetrics> metrics) =>
        client.Heartbeat(new HeartbeatRequest { JobId = JobId, Generation = Generation, Rank = Rank, Step = step, Metrics = { metrics } },
            deadline: Deadline(CallTimeout));

    public bool Commit(long step, IEnumerable<Job.CheckpointFile> files) =>
        client.CommitCheckpoint(new CommitRequest
        {
            JobId = JobId, Generation = Generation, Rank = Rank, Step = step,
            Files = { files.Select(f => new CheckpointFile { Name = f.Name, Bytes = f.Bytes, Sha256 = f.Sha256 }) },
        }, deadline: Deadline(CallTimeout)).Committed;

    /// <summary>RESTART in the reply: a new generation (a divergence rollback) replaces this one.</summary>
    public FinishReply Finish(long step, double trainLoss, double? valLoss, bool stopped)
    {
        var request = new FinishRequest { JobId = JobId, Generation = Generation, Rank = Rank, Step = step, TrainLoss = trainLoss, Stopped = stopped };
        if (valLoss is double v) request.ValLoss = v;
        return client.Finish(request, deadline: Deadline(CallTimeout));
    }

    /// <summary>Reports this rank's fatal error; never throws (the coordinator may be what failed).</summary>
    public void TryReportFailure(string message, Job.FailureClass kind)
    {
        try
        {
            client.ReportFailure(new FailureRequest { JobId = JobId, Generation = Generation, Rank = Rank, Message = Clip(message), FailureClass = Wire(kind) },
                deadline: Deadline(CallTimeout));
        }
        catch (RpcException) { }
    }

    static FailureClass Wire(Job.FailureClass kind) => kind switch
    {
        Job.FailureClass.Configuration => FailureClass.Configuration,
        Job.FailureClass.Resource => FailureClass.Resource,
        Job.FailureClass.PeerLost => FailureClass.PeerLost,
        _ => FailureClass.Unspecified,
    };

    /// <summary>The coordinator waits job.rendezvous_timeout_s for the group; its DeadlineExceeded before this call's
    /// own deadline is the group's timeout (a peer never published: TimeoutException, a failure of the generation), not
    /// a lost coordinator.</summary>
    public IReadOnlyList<string> AllGather(string key, int rank, int worldSize, string value, TimeSpan timeout)
    {
        var deadline = Deadline(timeout + CallTimeout);
        try
        {
            return client.Exchange(new ExchangeRequest { JobId = JobId, Generation = Generation, Rank = rank, Key = key, Value = value, WorldSize = worldSize },
                deadline: deadline).Values;
        }
        catch (RpcException e) when (e.StatusCode == StatusCode.DeadlineExceeded && DateTime.UtcNow < deadline)
        {
            throw new TimeoutException(e.Status.Detail, e);
        }
    }

    public void ReportFailure(string key, string message) =>
        client.ReportFailure(new FailureRequest { JobId = JobId, Generation = Generation, Rank = Rank, Key = key, Message = Clip(message) },
            deadline: Deadline(CallTimeout));

    public string? Failure(string key)
    {
        var reply = client.ReadFailure(new ReadFailureRequest { JobId = JobId, Generation = Generation, Rank = Rank, Key = key }, deadline: Deadline(CallTimeout));
        return reply.Found ? reply.Message : null;
    }

    static string Clip(string s) => s.Length <= 4000 ? s : s[..4000] + "…";

    public void Dispose() => channel.Dispose();
}
