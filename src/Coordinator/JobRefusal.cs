// Why the job refused a rank's call: the kind (the gRPC layer turns it into a status code) and the message naming the value.
namespace Coordinator;

/// <summary>The kinds of refusal, named as the status codes the gRPC layer answers with.</summary>
public enum RefusalKind { InvalidArgument, PermissionDenied, FailedPrecondition, ResourceExhausted, AlreadyExists, Aborted, DeadlineExceeded }

/// <summary>A call the job refuses, or a wait its generation ended; the message is what the rank is told.</summary>
public sealed class JobRefusal(RefusalKind kind, string message, JobPhase? over = null) : Exception(message)
{
    public RefusalKind Kind { get; } = kind;
    /// <summary>How the job ended, when the refusal is that it is over (sent as the trailer <see cref="OverTrailer"/>).</summary>
    public JobPhase? Over { get; } = over;

    /// <summary>The gRPC trailer naming the phase a job ended in ("succeeded", "stopped", "diverged", "failed").</summary>
    public const string OverTrailer = "oec-job-over";
}
