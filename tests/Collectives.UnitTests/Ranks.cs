// Test helper: runs one thread per rank, each with its own TcpRingCommunicator over a shared InProcessRendezvous.
using Collectives;

namespace Collectives.UnitTests;

internal static class Ranks
{
    public static readonly TimeSpan Guard = TimeSpan.FromSeconds(60);

    /// <summary>Runs body(rank, comm) on worldSize threads; returns per-rank results or the per-rank exceptions. Every
    /// rank gets <paramref name="options"/> unless <paramref name="optionsOf"/> gives a rank its own.</summary>
    public static (T?[] Results, Exception?[] Errors) TryRun<T>(int worldSize, Func<int, TcpRingCommunicator, T> body,
        TcpOptions? options = null, IRendezvous? rendezvous = null, bool dispose = true, Func<int, TcpOptions>? optionsOf = null)
    {
        rendezvous ??= new InProcessRendezvous();
        options ??= new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(20)); // one job token for all ranks
        var group = "test-" + Guid.NewGuid().ToString("N");
        var results = new T?[worldSize];
        var errors = new Exception?[worldSize];
        var threads = Enumerable.Range(0, worldSize).Select(rank => new Thread(() =>
        {
            try
            {
                var comm = TcpRingCommunicator.Create(rendezvous, group, rank, worldSize, optionsOf?.Invoke(rank) ?? options);
                try { results[rank] = body(rank, comm); }
                finally { if (dispose) comm.Dispose(); }
            }
            catch (Exception e) { errors[rank] = e; }
        }) { IsBackground = true }).ToArray();
        foreach (var t in threads) t.Start();
        var deadline = DateTime.UtcNow + Guard;
        foreach (var t in threads)
            Assert.True(t.Join(Max(deadline - DateTime.UtcNow)), $"a rank thread of world {worldSize} hung past {Guard.TotalSeconds} s");
        return (results, errors);
    }

    public static T[] Run<T>(int worldSize, Func<int, TcpRingCommunicator, T> body, TcpOptions? options = null)
    {
        var (results, errors) = TryRun(worldSize, body, options);
        var failed = errors.Select((e, r) => (e, r)).Where(x => x.e is not null).ToArray();
        if (failed.Length > 0)
            throw new AggregateException($"ranks [{string.Join(", ", failed.Select(f => f.r))}] failed", failed.Select(f => f.e!));
        return results!;
    }

    private static TimeSpan Max(TimeSpan t) => t > TimeSpan.Zero ? t : TimeSpan.Zero;
}
