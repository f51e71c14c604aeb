// Settings of the TCP ring backend.
namespace Collectives;

/// <summary>Host: the address other machines reach this rank at (the listener binds on any interface).
/// Port 0 = ephemeral. Timeout: every connect, accept, send and receive (default 60 s).
/// ChunkBytes: the pipelining segment, bytes per socket send/receive and size of the reduction scratch.</summary>
public sealed record TcpOptions(string Host = "127.0.0.1", int Port = 0, TimeSpan? Timeout = null, int ChunkBytes = 1 << 20)
{
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The effective timeout.</summary>
    public TimeSpan EffectiveTimeout => Timeout ?? DefaultTimeout;
}
