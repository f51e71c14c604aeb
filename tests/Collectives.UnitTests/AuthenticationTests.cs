// Ring connections prove the job token: a peer with another token, or a stranger who knows only the group key, is
// refused at once with a message naming it; the listener binds loopback when peers reach the rank on loopback.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Collectives;
using TorchSharp;

namespace Collectives.UnitTests;

public class AuthenticationTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    [Fact]
    public void A_peer_with_a_different_job_token_is_refused_at_once_naming_its_address_and_the_group()
    {
        var tokens = new[] { TcpOptions.NewToken(), TcpOptions.NewToken() };
        var clock = Stopwatch.StartNew();
        var (_, errors) = Ranks.TryRun(2, (_, _) => 0, optionsOf: rank => new TcpOptions(tokens[rank], Timeout: Timeout));

        Assert.True(clock.Elapsed < Timeout / 2, $"refusing took {clock.Elapsed}, as long as a timeout: it must not wait for one");
        for (var rank = 0; rank < 2; rank++)
        {
            var e = Assert.IsType<CollectiveException>(errors[rank]);
            Assert.Matches($@"^rank {rank} of group 'test-\w+': rank {1 - rank} at 127\.0\.0\.1:\d+ did not prove the job token", e.Message);
        }
    }

    [Fact]
    public async Task A_stranger_who_knows_the_group_key_but_not_the_token_is_dropped_and_the_ring_still_forms()
    {
        var rendezvous = new StrangerFirst();
        var options = new TcpOptions(TcpOptions.NewToken(), Timeout: Timeout);
        var stranger = Task.Run(rendezvous.Impersonate);

        var (results, errors) = Ranks.TryRun(2, (rank, comm) =>
        {
            using var t = torch.ones(3).mul_(rank + 1);
            comm.AllReduce(t);
            return t.data<float>().ToArray();
        }, options, rendezvous);

        Assert.All(errors, e => Assert.Null(e));
        Assert.All(results, r => Assert.Equal(new[] { 3f, 3f, 3f }, r));
        Assert.Equal(0, await stranger.WaitAsync(Timeout)); // rank 0 closed it: nothing but the challenge went to the stranger
    }

    [Fact]
    public void A_token_shorter_than_16_characters_is_refused_before_listening()
    {
        var e = Assert.Throws<ArgumentException>(() =>
            TcpRingCommunicator.Create(new InProcessRendezvous(), "short", 0, 2, new TcpOptions("secret", Timeout: Timeout)));
        Assert.Contains("group 'short': the job token has 6 characters, at least 16", e.Message);
        Assert.DoesNotContain("secret", e.Message);
    }

    [Theory]
    [InlineData("127.0.0.1", null, "127.0.0.1")]
    [InlineData("127.0.0.2", null, "127.0.0.2")]
    [InlineData("10.1.2.3", null, "0.0.0.0")]
    [InlineData("node-7", null, "0.0.0.0")]
    [InlineData("10.1.2.3", "10.1.2.3", "10.1.2.3")]
    [InlineData("127.0.0.1", "0.0.0.0", "0.0.0.0")]
    public void The_listener_binds_loopback_when_peers_reach_the_rank_on_loopback_else_every_interface_unless_told(string host, string? bind, string expected)
    {
        var options = new TcpOptions(TcpOptions.NewToken(), Host: host, Bind: bind is null ? null : IPAddress.Parse(bind));
        Assert.Equal(IPAddress.Parse(expected), options.EffectiveBind);
    }

    [Fact]
    public void The_token_never_appears_in_the_options_text()
    {
        var options = new TcpOptions(TcpOptions.NewToken());
        Assert.DoesNotContain(options.Token, options.ToString());
        Assert.Contains("Bind = 127.0.0.1", options.ToString());
    }

    /// <summary>Holds rank 1 back after the endpoints are exchanged until a stranger, which read the group key and
    /// rank 0's endpoint off the exchange, has connected to rank 0 claiming to be rank 1 and sent a proof made without
    /// the token. Impersonate returns what the stranger's last receive got: 0 bytes when rank 0 closed the link.</summary>
    private sealed class StrangerFirst : IRendezvous
    {
        private readonly InProcessRendezvous inner = new();
        private readonly TaskCompletionSource<(string Group, string Endpoint)> exchanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly ManualResetEventSlim proofSent = new();

        public IReadOnlyList<string> AllGather(string key, int rank, int worldSize, string value, TimeSpan timeout)
        {
            var all = inner.AllGather(key, rank, worldSize, value, timeout);
            if (rank != 1) return all;
            exchanged.TrySetResult((key[..key.LastIndexOf("/endpoints", StringComparison.Ordinal)], all[0]));
            Assert.True(proofSent.Wait(timeout), "the stranger never sent its proof");
            return all;
        }

        public void ReportFailure(string key, string message) => inner.ReportFailure(key, message);

        public string? Failure(string key) => inner.Failure(key);

        public async Task<int> Impersonate()
        {
            var (group, endpoint) = await exchanged.Task.WaitAsync(Timeout);
            using var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { ReceiveTimeout = (int)Timeout.TotalMilliseconds };
            s.Connect(IPEndPoint.Parse(endpoint));
            new RingHandshake(group, 1, 2, TcpOptions.NewToken()).SendHello(s, 0, endpoint);
            RingHandshake.ReceiveExactly(s, new byte[64]); // rank 0's nonce and its own proof
            s.Send(new byte[32]);                           // a proof without the token
            proofSent.Set();
            return s.Receive(new byte[1]);
        }
    }

    /// <summary>A connection that says nothing (a port scanner, a health check, a half-open connection), or a stranger
    /// who knows the group key and stalls before its proof, reaches rank 0's listener before rank 1 does: each holds up
    /// only its own handshake, and the ring forms at once rather than fail after a whole timeout.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void A_connection_that_stalls_its_handshake_does_not_hold_up_the_ring(bool sendsAValidHello)
    {
        var timeout = TimeSpan.FromSeconds(10);
        var rendezvous = new StallingStrangerFirst(sendsAValidHello);
        var clock = Stopwatch.StartNew();
        var (results, errors) = Ranks.TryRun(2, (rank, comm) =>
        {
            using var t = torch.ones(3).mul_(rank + 1);
            comm.AllReduce(t);
            return t.data<float>().ToArray();
        }, rendezvous: rendezvous, optionsOf: _ => new TcpOptions(rendezvous.Token, Timeout: timeout));
        rendezvous.Stranger?.Dispose();

        Assert.All(errors, e => Assert.Null(e));
        Assert.All(results, r => Assert.Equal([3f, 3f, 3f], r!));
        Assert.True(clock.Elapsed < timeout / 2, $"the ring formed after {clock.Elapsed}: the stalled connection held it up");
    }

    private sealed class StallingStrangerFirst(bool validHello) : IRendezvous
    {
        private readonly InProcessRendezvous inner = new();
        public string Token { get; } = TcpOptions.NewToken();
        public Socket? Stranger;

        public IReadOnlyList<string> AllGather(string key, int rank, int worldSize, string value, TimeSpan timeout)
        {
            var all = inner.AllGather(key, rank, worldSize, value, timeout);
            if (rank != 1) return all;
            Stranger = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            Stranger.Connect(IPEndPoint.Parse(all[0]));
            if (validHello) // the group key is no secret; the token is
                new RingHandshake(key[..key.LastIndexOf("/endpoints", StringComparison.Ordinal)], 1, 2, TcpOptions.NewToken()).SendHello(Stranger, 0, all[0]);
            Thread.Sleep(300); // rank 0 accepts it first; then it says no more
            return all;
        }

        public void ReportFailure(string key, string message) => inner.ReportFailure(key, message);

        public string? Failure(string key) => inner.Failure(key);
    }
}
