// Which class a rank's fatal exception belongs to: what the coordinator needs to decide between a restart and the end.
using Collectives;
using Data;
using Job;

namespace Rank.Distributed;

public static class FailureClassifier
{
    const int NoSpace = 28, QuotaExceeded = 122; // Linux errno ENOSPC, EDQUOT: IOException.HResult on Unix

    /// <summary>Resource: out of memory (.NET, libtorch's CPU allocator, CUDA), no space left on device or over quota.
    /// Configuration: bad settings (ArgumentException), data (DataFormatException) or a backend this machine cannot run
    /// (BackendUnavailableException: NCCL or CUDA missing, or a GPU NCCL cannot set up on). PeerLost: a collective failed
    /// (its peer closed, reset or went silent). Anything else is Other, restarted by the coordinator. The exception and
    /// its inner exceptions are looked at, a resource first: a collective may fail because its own rank ran out.</summary>
    public static FailureClass Classify(Exception e)
    {
        var chain = Chain(e).ToList();
        if (chain.Any(IsResource)) return FailureClass.Resource;
        if (chain.Any(x => x is ArgumentException or DataFormatException or BackendUnavailableException)) return FailureClass.Configuration;
        if (chain.Any(x => x is CollectiveException)) return FailureClass.PeerLost;
        return FailureClass.Other;
    }

    static bool IsResource(Exception e) =>
        e is OutOfMemoryException or InsufficientMemoryException
        || e is IOException { HResult: NoSpace or QuotaExceeded }
        || e.Message.Contains("No space left on device", StringComparison.Ordinal)
        || e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase)
        || e.Message.Contains("DefaultCPUAllocator: not enough memory", StringComparison.Ordinal);

    static IEnumerable<Exception> Chain(Exception e)
    {
        for (Exception? x = e; x is not null; x = x.InnerException)
        {
            yield return x;
            if (x is AggregateException a)
                foreach (var inner in a.InnerExceptions.SelectMany(Chain)) yield return inner;
        }
    }
}
