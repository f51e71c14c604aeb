// Settings of the TCP ring backend.
using System.Net;
using System.Security.Cryptography;
using System.Text;

namespace Collectives;

/// <summary>Token: the job's secret; every ring connection proves it in both directions (HMAC-SHA256 over a fresh
/// nonce), at least <see cref="MinTokenLength"/> characters. Host: the address other ranks reach this rank at.
/// Bind: the address the listener binds; null binds Host itself when it is a loopback address (a job on one machine
/// is not reachable from others), else every interface. Port 0 = ephemeral. Timeout: every connect, accept, send and
/// receive (default 60 s). ChunkBytes: the pipelining segment, bytes per socket send/receive and size of the
/// reduction scratch.</summary>
public sealed record TcpOptions(string Token, string Host = "127.0.0.1", IPAddress? Bind = null, int Port = 0, TimeSpan? Timeout = null,
                                int ChunkBytes = 1 << 20)
{
    public const int MinTokenLength = 16;

    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(60);

    /// <summary>The effective timeout.</summary>
    public TimeSpan EffectiveTimeout => Timeout ?? DefaultTimeout;

    /// <summary>The address the listener binds.</summary>
    public IPAddress EffectiveBind => Bind ?? (IPAddress.TryParse(Host, out var ip) && IPAddress.IsLoopback(ip) ? ip : IPAddress.Any);

    /// <summary>A fresh random token, for rings built without a coordinator (tests, benchmarks): 48 hex digits.</summary>
    public static string NewToken() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24));

    /// <summary>The token never appears in logs or messages.</summary>
    private bool PrintMembers(StringBuilder builder)
    {
        builder.Append($"Host = {Host}, Bind = {EffectiveBind}, Port = {Port}, Timeout = {EffectiveTimeout}, ChunkBytes = {ChunkBytes}");
        return true;
    }
}
