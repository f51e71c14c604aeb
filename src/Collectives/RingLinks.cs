// The two sockets of one rank in a ring: to the next rank (we connect) and from the previous rank (we accept), with the handshake.
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Collectives;

/// <summary>An I/O failure attributed to one peer of the ring.</summary>
internal sealed class PeerIoException(int peerRank, string peerEndpoint, string what, Exception? inner = null, bool timedOut = false)
    : Exception($"{what} (peer rank {peerRank} at {peerEndpoint})", inner)
{
    /// <summary>True when the peer went silent (timeout) rather than away (EOF, reset): the cause may lie further up the ring.</summary>
    public bool TimedOut { get; } = timedOut;
    public int PeerRank { get; } = peerRank;
    public string PeerEndpoint { get; } = peerEndpoint;
    public string What { get; } = what;
}

internal sealed class RingLinks : IDisposable
{
    private const int HandshakeMagic = 0x52_49_4E_47; // "RING"
    private readonly Socket toNext;
    private readonly Socket fromPrev;

    public int Next { get; }
    public int Prev { get; }
    public string NextEndpoint { get; }
    public string PrevEndpoint { get; }
    public IReadOnlyList<string> Endpoints { get; private init; } = [];

    private RingLinks(Socket toNext, Socket fromPrev, int next, int prev, string nextEndpoint, string prevEndpoint)
    {
        (this.toNext, this.fromPrev, Next, Prev, NextEndpoint, PrevEndpoint) = (toNext, fromPrev, next, prev, nextEndpoint, prevEndpoint);
    }

    /// <summary>Listens, publishes host:port under "{groupKey}/endpoints", connects to rank+1 and accepts rank-1.</summary>
    public static RingLinks Open(IRendezvous rendezvous, string groupKey, int rank, int worldSize, TcpOptions options)
    {
        var timeout = options.EffectiveTimeout;
        using var listener = Listen(options.Port);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var endpoints = rendezvous.AllGather($"{groupKey}/endpoints", rank, worldSize, $"{options.Host}:{port}", timeout);
        int next = (rank + 1) % worldSize, prev = (rank - 1 + worldSize) % worldSize;
        var toNext = Connect(endpoints[next], next, timeout);
        try
        {
            SendHandshake(toNext, groupKey, rank, worldSize, next, endpoints[next]);
            var fromPrev = Accept(listener, groupKey, rank, worldSize, prev, endpoints[prev], timeout);
            return new RingLinks(toNext, fromPrev, next, prev, endpoints[next], endpoints[prev]) { Endpoints = endpoints };
        }
        catch
        {
            toNext.Dispose();
            throw;
        }
    }

    /// <summary>Sends exactly the bytes; failures name the next rank.</summary>
    public void Send(ReadOnlySpan<byte> bytes)
    {
        try
        {
            while (!bytes.IsEmpty) bytes = bytes[toNext.Send(bytes)..];
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            throw new PeerIoException(Next, NextEndpoint, $"send to rank {Next} failed: {Describe(e)}", e, IsTimeout(e));
        }
    }

    /// <summary>Receives exactly the bytes; EOF or failures name the previous rank.</summary>
    public void Receive(Span<byte> bytes)
    {
        try
        {
            while (!bytes.IsEmpty)
            {
                var n = fromPrev.Receive(bytes);
                if (n == 0) throw new PeerIoException(Prev, PrevEndpoint, $"rank {Prev} closed the connection");
                bytes = bytes[n..];
            }
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            throw new PeerIoException(Prev, PrevEndpoint, $"receive from rank {Prev} failed: {Describe(e)}", e, IsTimeout(e));
        }
    }

    /// <summary>Closes both sockets; blocked sends and receives on other threads fail at once.</summary>
    public void Dispose()
    {
        Close(toNext);
        Close(fromPrev);
    }

    private static void Close(Socket s)
    {
        try { s.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        s.Dispose();
    }

    private static bool IsTimeout(Exception e) =>
        e is SocketException { SocketErrorCode: SocketError.TimedOut or SocketError.WouldBlock };

    private static string Describe(Exception e) =>
        IsTimeout(e) ? "timed out" : e is SocketException se ? se.SocketErrorCode.ToString() : "socket closed locally";

    private static Socket Listen(int port)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Any, port));
        s.Listen(16);
        return s;
    }

    private static void Configure(Socket s, TimeSpan timeout)
    {
        s.NoDelay = true;
        s.SendTimeout = s.ReceiveTimeout = (int)Math.Min(int.MaxValue, timeout.TotalMilliseconds);
        s.SendBufferSize = s.ReceiveBufferSize = 4 << 20;
    }

    // Retries refused connections until the timeout: the peer may still be starting. Connects without the thread pool
    // (non-blocking connect + Poll), so many ranks as threads cannot starve it.
    private static Socket Connect(string endpoint, int peer, TimeSpan timeout)
    {
        var (host, port) = ParseEndpoint(endpoint);
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            try
            {
                Configure(s, timeout);
                ConnectWithin(s, new IPEndPoint(Resolve(host), port), deadline);
                return s;
            }
            catch (SocketException e)
            {
                s.Dispose();
                if (DateTime.UtcNow >= deadline)
                    throw new CollectiveException($"connect to rank {peer} at {endpoint} failed within {timeout.TotalSeconds:0.###} s: {e.SocketErrorCode}", e);
                Thread.Sleep(50);
            }
        }
    }

    private static IPAddress Resolve(string host) =>
        IPAddress.TryParse(host, out var ip) ? ip
        : Dns.GetHostAddresses(host).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork)
          ?? throw new CollectiveException($"host '{host}' has no IPv4 address");

    private static void ConnectWithin(Socket s, IPEndPoint target, DateTime deadline)
    {
        s.Blocking = false;
        try { s.Connect(target); }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.InProgress) { }
        var waitUs = (int)Math.Clamp((deadline - DateTime.UtcNow).TotalMicroseconds, 0, int.MaxValue);
        if (!s.Poll(waitUs, SelectMode.SelectWrite)) throw new SocketException((int)SocketError.TimedOut);
        var error = (SocketError)(int)s.GetSocketOption(SocketOptionLevel.Socket, SocketOptionName.Error)!;
        if (error != SocketError.Success) throw new SocketException((int)error);
        s.Blocking = true;
    }

    private static (string Host, int Port) ParseEndpoint(string endpoint)
    {
        var colon = endpoint.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(endpoint.AsSpan(colon + 1), out var port))
            throw new CollectiveException($"bad endpoint '{endpoint}': expected host:port");
        return (endpoint[..colon], port);
    }

    // Handshake: magic, sender rank, world size, group key length, group key (UTF-8). Little-endian int32s.
    private static void SendHandshake(Socket s, string groupKey, int rank, int worldSize, int peer, string endpoint)
    {
        var key = Encoding.UTF8.GetBytes(groupKey);
        var buf = new byte[16 + key.Length];
        BinaryPrimitives.WriteInt32LittleEndian(buf, HandshakeMagic);
        BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(4), rank);
        BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(8), worldSize);
        BinaryPrimitives.WriteInt32LittleEndian(buf.AsSpan(12), key.Length);
        key.CopyTo(buf, 16);
        try { s.Send(buf); }
        catch (SocketException e) { throw new CollectiveException($"rank {rank}: handshake to rank {peer} at {endpoint} failed: {e.SocketErrorCode}", e); }
    }

    // Accepts until the expected previous rank of this group shows up or the timeout passes; strangers are dropped.
    private static Socket Accept(Socket listener, string groupKey, int rank, int worldSize, int prev, string prevEndpoint, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        string? lastProblem = null;
        while (DateTime.UtcNow < deadline)
        {
            var waitUs = (int)Math.Clamp((deadline - DateTime.UtcNow).TotalMicroseconds, 1, 200_000);
            if (!listener.Poll(waitUs, SelectMode.SelectRead)) continue;
            var s = listener.Accept();
            Configure(s, timeout);
            lastProblem = CheckHandshake(s, groupKey, worldSize, prev);
            if (lastProblem is null) return s;
            s.Dispose();
        }
        throw new CollectiveException($"rank {rank} of group '{groupKey}': rank {prev} ({prevEndpoint}) did not connect within "
            + $"{timeout.TotalSeconds:0.###} s" + (lastProblem is null ? "" : $"; rejected: {lastProblem}"));
    }

    // Null when the handshake says (group, world size, previous rank); otherwise what was wrong.
    private static string? CheckHandshake(Socket s, string groupKey, int worldSize, int prev)
    {
        try
        {
            var head = new byte[16];
            ReceiveExactly(s, head);
            var magic = BinaryPrimitives.ReadInt32LittleEndian(head);
            int peerRank = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(4)), peerWorld = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(8));
            var keyLength = BinaryPrimitives.ReadInt32LittleEndian(head.AsSpan(12));
            if (magic != HandshakeMagic || keyLength is < 0 or > 1 << 16) return $"connection from {s.RemoteEndPoint} is not a ring peer";
            var key = new byte[keyLength];
            ReceiveExactly(s, key);
            var peerGroup = Encoding.UTF8.GetString(key);
            if (peerGroup != groupKey || peerRank != prev || peerWorld != worldSize)
                return $"{s.RemoteEndPoint} says rank {peerRank} of {peerWorld} in group '{peerGroup}', expected rank {prev} of {worldSize} in '{groupKey}'";
            return null;
        }
        catch (Exception e) when (e is SocketException or EndOfStreamException)
        {
            return $"handshake from {s.RemoteEndPoint} failed: {e.Message}";
        }
    }

    private static void ReceiveExactly(Socket s, Span<byte> bytes)
    {
        while (!bytes.IsEmpty)
        {
            var n = s.Receive(bytes);
            if (n == 0) throw new EndOfStreamException("connection closed during handshake");
            bytes = bytes[n..];
        }
    }
}
