// The two sockets of one rank in a ring: to the next rank (we connect) and from the previous rank (we accept).
using System.Net;
using System.Net.Sockets;

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

    /// <summary>Listens, publishes host:port under "{groupKey}/endpoints", connects to rank+1 and accepts rank-1; both
    /// links prove the job token (<see cref="RingHandshake"/>). The connecting half of the handshake waits for rank+1's
    /// challenge only once this rank has sent its own to rank-1, so that no rank of the ring waits on another in a cycle.</summary>
    public static RingLinks Open(IRendezvous rendezvous, string groupKey, int rank, int worldSize, TcpOptions options)
    {
        var timeout = options.EffectiveTimeout;
        using var listener = Listen(options.EffectiveBind, options.Port);
        var port = ((IPEndPoint)listener.LocalEndPoint!).Port;
        var endpoints = rendezvous.AllGather($"{groupKey}/endpoints", rank, worldSize, $"{options.Host}:{port}", timeout);
        int next = (rank + 1) % worldSize, prev = (rank - 1 + worldSize) % worldSize;
        var handshake = new RingHandshake(groupKey, rank, worldSize, options.Token);
        var toNext = Connect(endpoints[next], next, timeout);
        try
        {
            var helloNonce = handshake.SendHello(toNext, next, endpoints[next]);
            var fromPrev = Accept(listener, handshake, groupKey, rank, prev, endpoints[prev], timeout,
                                  () => handshake.Prove(toNext, helloNonce, next, endpoints[next]));
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

    private static Socket Listen(IPAddress bind, int port)
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(bind, port));
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

    /// <summary>Accepts until the expected previous rank of this group shows up and proves the job token, or the
    /// timeout passes; strangers are dropped. Each connection's handshake runs on a task of its own, so that one that
    /// says nothing (a port scanner, a health check, a half-open connection) or trickles bytes holds up only itself;
    /// at the deadline every connection still talking is closed. <paramref name="proveToNext"/> runs once, after the
    /// first challenge went out and before its proof is read.</summary>
    private static Socket Accept(Socket listener, RingHandshake handshake, string groupKey, int rank, int prev, string prevEndpoint,
                                 TimeSpan timeout, Action proveToNext)
    {
        const int MaxTalking = 64; // connections whose handshake is under way; more are closed at once
        var deadline = DateTime.UtcNow + timeout;
        var winner = new TaskCompletionSource<Socket>(TaskCreationOptions.RunContinuationsAsynchronously);
        var talking = new List<(Socket Socket, Task Handshake)>();
        string? lastProblem = null;
        // Once, whichever handshake gets there first; the others wait for it (every winner has proved this rank to
        // rank+1 before it returns, so nothing else writes to that link meanwhile), and see its exception too.
        var proved = new Lazy<bool>(() =>
        {
            proveToNext();
            return true;
        }, LazyThreadSafetyMode.ExecutionAndPublication);
        void ProveOnce() => _ = proved.Value;
        try
        {
            while (DateTime.UtcNow < deadline && !winner.Task.IsCompleted)
            {
                var waitUs = (int)Math.Clamp((deadline - DateTime.UtcNow).TotalMicroseconds, 1, 50_000);
                if (!listener.Poll(waitUs, SelectMode.SelectRead)) continue;
                var s = listener.Accept();
                talking.RemoveAll(t => t.Handshake.IsCompleted);
                if (talking.Count >= MaxTalking)
                {
                    s.Dispose();
                    continue;
                }
                var left = deadline - DateTime.UtcNow;
                if (left < TimeSpan.FromMilliseconds(1)) // a socket timeout of 0 would be none
                {
                    s.Dispose();
                    break;
                }
                Configure(s, left); // no handshake read outlives the deadline
                // a thread of its own (LongRunning): blocking handshake reads on the thread pool would starve it when
                // many ranks are threads of one process
                talking.Add((s, Task.Factory.StartNew(() =>
                {
                    string? problem;
                    try { problem = Authenticate(s, handshake, prev, ProveOnce); }
                    catch (Exception e)
                    {
                        winner.TrySetException(e); // proving this rank to rank+1 failed
                        s.Dispose();
                        return;
                    }
                    if (problem is null && winner.TrySetResult(s)) return;
                    if (problem is not null) Volatile.Write(ref lastProblem, problem);
                    s.Dispose();
                }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default)));
            }
            if (winner.Task.IsCompleted)
            {
                var prevLink = winner.Task.GetAwaiter().GetResult();
                prevLink.SendTimeout = prevLink.ReceiveTimeout = (int)Math.Min(int.MaxValue, timeout.TotalMilliseconds); // the ring's, from now on
                return prevLink;
            }
        }
        finally
        {
            foreach (var (s, _) in talking)
                if (!winner.Task.IsCompletedSuccessfully || !ReferenceEquals(s, winner.Task.Result)) s.Dispose();
        }
        string? problemSeen = Volatile.Read(ref lastProblem);
        throw new CollectiveException($"rank {rank} of group '{groupKey}': rank {prev} ({prevEndpoint}) did not connect within "
            + $"{timeout.TotalSeconds:0.###} s" + (problemSeen is null ? "" : $"; rejected: {problemSeen}"));
    }

    // Null when the peer is the previous rank of this group and proved the job token; otherwise what was wrong.
    // Runs proveToNext (which acts once) between the challenge and the proof.
    private static string? Authenticate(Socket s, RingHandshake handshake, int prev, Action proveToNext)
    {
        var remote = s.RemoteEndPoint;
        byte[] challengeNonce;
        try
        {
            var problem = handshake.ReadHello(s, prev, out var helloNonce);
            if (problem is not null) return problem;
            challengeNonce = handshake.SendChallenge(s, helloNonce);
        }
        catch (Exception e) when (e is SocketException or EndOfStreamException or ObjectDisposedException) // closed at the deadline
        {
            return $"handshake from {remote} failed: {e.Message}";
        }
        proveToNext();
        try { return handshake.CheckProof(s, challengeNonce, prev); }
        catch (Exception e) when (e is SocketException or EndOfStreamException or ObjectDisposedException)
        {
            return $"handshake from {remote} failed: {e.Message}";
        }
    }
}
