// The gRPC face of the coordinator: maps each call to JobState with the caller's address, and answers back; a refusal
// becomes an RpcException with its status code.
using Coordinator.Protocol;
using Grpc.Core;

namespace Coordinator;

sealed class CoordinatorService(JobState job) : Protocol.Coordinator.CoordinatorBase
{
    public override Task<RegisterReply> Register(RegisterRequest request, ServerCallContext context) =>
        Register(request, context.Peer, context.CancellationToken);

    public override Task<ExchangeReply> Exchange(ExchangeRequest request, ServerCallContext context) =>
        Exchange(request, context.Peer, context.CancellationToken);

    public override Task<BatchesReply> GetBatches(BatchesRequest request, ServerCallContext context) =>
        Task.FromResult(Batches(request, context.Peer));

    public override Task<HeartbeatReply> Heartbeat(HeartbeatRequest request, ServerCallContext context) =>
        Task.FromResult(Heartbeat(request, context.Peer));

    public override Task<Ack> ReportFailure(FailureRequest request, ServerCallContext context)
    {
        ReportFailure(request, context.Peer);
        return Task.FromResult(new Ack());
    }

    public override Task<ReadFailureReply> ReadFailure(ReadFailureRequest request, ServerCallContext context) =>
        Task.FromResult(ReadFailure(request, context.Peer));

    public override Task<CommitReply> CommitCheckpoint(CommitRequest request, ServerCallContext context) =>
        Task.FromResult(Commit(request, context.Peer));

    public override Task<FinishReply> Finish(FinishRequest request, ServerCallContext context) =>
        Task.FromResult(Finish(request, context.Peer));

    public async Task<RegisterReply> Register(RegisterRequest r, string peer, CancellationToken cancel)
    {
        var spec = job.Spec;
        var place = await Answer(() => job.Register(new Candidate(r.JobId, r.WorldSize, r.RequestedRank, r.Host, r.Pid, peer), cancel));
        return new RegisterReply
        {
            Generation = place.Generation, Rank = place.Rank, WorldSize = spec.Options.WorldSize, ConfigJson = spec.ConfigJson, StartStep = place.StartStep,
            ResumeFrom = place.ResumeFrom ?? "", Bootstrap = new Bootstrap { Backend = spec.Options.Backend.ToString().ToLowerInvariant(), GroupKey = $"{spec.JobId}/g{place.Generation}" },
            PlanSequences = spec.Train.Plan.Count, PlanFingerprint = spec.Train.Plan.Fingerprint(),
            HeartbeatIntervalS = spec.Options.HeartbeatIntervalS, HeartbeatTimeoutS = spec.Options.HeartbeatTimeoutS,
            LearningRateScale = place.LearningRateScale,
        };
    }

    public async Task<ExchangeReply> Exchange(ExchangeRequest r, string peer, CancellationToken cancel) =>
        new() { Values = { await Answer(() => job.Exchange(new Caller(r.JobId, r.Generation, r.Rank, peer), r.Key, r.Value, r.WorldSize, cancel)) } };

    public BatchesReply Batches(BatchesRequest r, string peer)
    {
        var steps = Answer(() => job.Batches(new Caller(r.JobId, r.Generation, r.Rank, peer), r.FirstStep, r.Count));
        return new BatchesReply { Steps = { steps.Select(s => new StepBatch { Step = s.Step, Sequences = { s.Sequences } }) } };
    }

    public HeartbeatReply Heartbeat(HeartbeatRequest r, string peer)
    {
        var order = Answer(() => job.Heartbeat(new Caller(r.JobId, r.Generation, r.Rank, peer), r.Step, [.. r.Metrics.Select(m => m.ToRecord())]));
        return new HeartbeatReply { Command = Wire(order.Kind), Reason = order.Reason };
    }

    public void ReportFailure(FailureRequest r, string peer)
    {
        try { job.ReportFailure(new Caller(r.JobId, r.Generation, r.Rank, peer), r.Key, r.Message, Class(r.FailureClass)); }
        catch (JobRefusal e) { throw Refused(e); }
    }

    public ReadFailureReply ReadFailure(ReadFailureRequest r, string peer) =>
        Answer(() => job.ReadFailure(new Caller(r.JobId, r.Generation, r.Rank, peer), r.Key)) is { } message
            ? new ReadFailureReply { Found = true, Message = message } : new ReadFailureReply();

    public CommitReply Commit(CommitRequest r, string peer) => new()
    {
        Committed = Answer(() => job.Commit(new Caller(r.JobId, r.Generation, r.Rank, peer), r.Step,
            [.. r.Files.Select(f => new Job.CheckpointFile(f.Name, f.Bytes, f.Sha256))])),
    };

    public FinishReply Finish(FinishRequest r, string peer)
    {
        var order = Answer(() => job.Finish(new Caller(r.JobId, r.Generation, r.Rank, peer), new FinishReport(r.Step, r.TrainLoss, r.HasValLoss ? r.ValLoss : null, r.Stopped)));
        return new FinishReply { Command = Wire(order.Kind), Reason = order.Reason };
    }

    static Job.FailureClass Class(Protocol.FailureClass wire) => wire switch
    {
        Protocol.FailureClass.Configuration => Job.FailureClass.Configuration,
        Protocol.FailureClass.Resource => Job.FailureClass.Resource,
        Protocol.FailureClass.PeerLost => Job.FailureClass.PeerLost,
        _ => Job.FailureClass.Other,
    };

    static Command Wire(OrderKind command) => command switch
    {
        OrderKind.Continue => Command.Continue,
        OrderKind.Stop => Command.Stop,
        OrderKind.Abort => Command.Abort,
        OrderKind.Restart => Command.Restart,
        _ => throw new ArgumentOutOfRangeException(nameof(command), command, null),
    };

    static T Answer<T>(Func<T> call)
    {
        try { return call(); }
        catch (JobRefusal e) { throw Refused(e); }
    }

    static async Task<T> Answer<T>(Func<Task<T>> call)
    {
        try { return await call(); }
        catch (JobRefusal e) { throw Refused(e); }
    }

    static RpcException Refused(JobRefusal e) => new(new Status(e.Kind switch
    {
        RefusalKind.InvalidArgument => StatusCode.InvalidArgument,
        RefusalKind.PermissionDenied => StatusCode.PermissionDenied,
        RefusalKind.FailedPrecondition => StatusCode.FailedPrecondition,
        RefusalKind.ResourceExhausted => StatusCode.ResourceExhausted,
        RefusalKind.AlreadyExists => StatusCode.AlreadyExists,
        RefusalKind.Aborted => StatusCode.Aborted,
        RefusalKind.DeadlineExceeded => StatusCode.DeadlineExceeded,
        _ => StatusCode.Unknown,
    }, e.Message), e.Over is { } over ? new Metadata { { JobRefusal.OverTrailer, over.ToString().ToLowerInvariant() } } : Metadata.Empty);
}
