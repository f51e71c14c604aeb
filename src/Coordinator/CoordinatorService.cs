// The gRPC face of the coordinator: each call goes to JobState with the caller's address for the log.
using Coordinator.Protocol;
using Grpc.Core;

namespace Coordinator;

sealed class CoordinatorService(JobState job) : Protocol.Coordinator.CoordinatorBase
{
    public override Task<RegisterReply> Register(RegisterRequest request, ServerCallContext context) =>
        job.Register(request, context.Peer, context.CancellationToken);

    public override Task<ExchangeReply> Exchange(ExchangeRequest request, ServerCallContext context) =>
        job.Exchange(request, context.Peer, context.CancellationToken);

    public override Task<BatchesReply> GetBatches(BatchesRequest request, ServerCallContext context) =>
        Task.FromResult(job.Batches(request, context.Peer));

    public override Task<HeartbeatReply> Heartbeat(HeartbeatRequest request, ServerCallContext context) =>
        Task.FromResult(job.Heartbeat(request, context.Peer));

    public override Task<Ack> ReportFailure(FailureRequest request, ServerCallContext context)
    {
        job.ReportFailure(request, context.Peer);
        return Task.FromResult(new Ack());
    }

    public override Task<ReadFailureReply> ReadFailure(ReadFailureRequest request, ServerCallContext context) =>
        Task.FromResult(job.ReadFailure(request, context.Peer));

    public override Task<CommitReply> CommitCheckpoint(CommitRequest request, ServerCallContext context) =>
        Task.FromResult(job.Commit(request, context.Peer));

    public override Task<FinishReply> Finish(FinishRequest request, ServerCallContext context) =>
        Task.FromResult(job.Finish(request, context.Peer));
}
