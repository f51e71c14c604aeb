// Why the job refused a rank's call: the kind (the gRPC layer turns it into a status code) and the message naming the value.
namespace Coordinator;

/// <summary>The kinds of refusal, named as the status codes the gRPC layer answers with.</summary>
public enum RefusalKind { InvalidArgument, PermissionDenied, FailedPrecondition, ResourceExhausted, AlreadyExists, Aborted, DeadlineExceeded }

/// <summary>A call the job refuses, or a wait its generation ended; the message is what the rank is told.</summary>
public sealed class JobRefusal(RefusalKind kind, string message) : Exception(message)
{
    public RefusalKind Kind { get; } = kind;
}
