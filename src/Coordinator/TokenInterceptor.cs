// Every call to the coordinator's service must carry the job token: "authorization: Bearer <token>".
using System.Security.Cryptography;
using System.Text;
using Grpc.Core;
using Grpc.Core.Interceptors;

namespace Coordinator;

/// <summary>Refuses a call without the token (Unauthenticated) or with another one (PermissionDenied), and logs it.
/// The gRPC health service is left open for probes.</summary>
sealed class TokenInterceptor(JobState job, JobLog log) : Interceptor
{
    public const string Header = "authorization";
    readonly byte[] expected = Encoding.UTF8.GetBytes(job.Spec.Token);

    public override Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        if (context.Method.StartsWith("/oec.coordinator.v1.Coordinator/", StringComparison.Ordinal)) Check(context);
        return continuation(request, context);
    }

    void Check(ServerCallContext context)
    {
        string? value = context.RequestHeaders.GetValue(Header);
        if (value is null || !value.StartsWith("Bearer ", StringComparison.Ordinal))
        {
            log.Info($"refused (Unauthenticated): {context.Method} from {context.Peer} carries no job token");
            throw new RpcException(new Status(StatusCode.Unauthenticated, $"no job token: send metadata '{Header}: Bearer <token>' (OEC_JOB_TOKEN)"));
        }
        var given = Encoding.UTF8.GetBytes(value["Bearer ".Length..]);
        if (!CryptographicOperations.FixedTimeEquals(given, expected))
        {
            log.Info($"refused (PermissionDenied): {context.Method} from {context.Peer} carries a wrong job token");
            throw new RpcException(new Status(StatusCode.PermissionDenied, $"the job token is not the one of job '{job.Spec.JobId}'"));
        }
    }
}
