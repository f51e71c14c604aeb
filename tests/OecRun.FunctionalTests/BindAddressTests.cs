// Where a job listens: a job on this machine only on loopback (its ranks' ring and its coordinator), a cluster
// coordinator at `--host` (every interface by default), a rank's ring at OEC_RING_BIND; bad addresses exit 2.
using System.Net;
using Job;
using OecRun.Launching;
using Rank.Configuration;
using Rank.Distributed;
using Xunit.Abstractions;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.FunctionalTests;

public sealed class BindAddressTests(ITestOutputHelper log)
{
    static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData(null, "127.0.0.1")]
    [InlineData("0.0.0.0", "0.0.0.0")]
    public async Task A_rank_whose_coordinator_is_on_loopback_listens_for_its_ring_on_loopback_unless_OEC_RING_BIND_says_otherwise(string? bind, string expected)
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, ["train.steps=5", "train.warmup_steps=1", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=0", "train.threads=1",
            "data.synthetic_tokens=30000", "job.world_size=2", "job.checkpoint_every=0", "job.rendezvous_timeout_s=120", "job.max_restarts=0",
            "run.out_dir=" + temp.Path]);
        await using var coordinator = await BareCoordinator.StartAsync(config, "bind");
        using var rank = coordinator.StartRank(new() { ["RANK"] = "0", ["OEC_RING_BIND"] = bind }); // as the local launcher starts it
        var output = rank.StandardOutput.ReadToEndAsync();
        // Rank 1 registers and never publishes its endpoint: rank 0's ring listener stays open, waiting for it.
        using var silent = new CoordinatorClient(coordinator.Host.Address, coordinator.JobId, coordinator.Token);
        await Task.Run(() => silent.Register(1, 2, "127.0.0.1", TimeSpan.FromMinutes(1), unreachableFor: TimeSpan.Zero)).WaitAsync(Deadline);
        try
        {
            var listening = await ListeningSockets.WaitFor(rank, 1, Deadline);
            Assert.Equal(IPAddress.Parse(expected), Assert.Single(listening).Address);
        }
        finally
        {
            rank.Kill();
            log.WriteLine(await output.WaitAsync(Deadline));
        }
    }

    [Fact]
    public async Task A_local_train_serves_its_coordinator_and_metrics_on_loopback_only()
    {
        using var temp = new TempDirectory();
        using var train = ChildProcesses.Start(Launch.SelfCommand("train", "train.steps=20", "train.warmup_steps=2", "train.batch_size=4", "train.sequence_length=32",
            "train.eval_every=0", "train.threads=1", "data.synthetic_tokens=20000", "job.world_size=2", "run.out_dir=" + temp.File("run")), new());
        var output = train.StandardOutput.ReadToEndAsync();

        var listening = await ListeningSockets.WaitFor(train, 2, Deadline); // gRPC for the ranks; /metrics and /live
        await train.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(2));
        log.WriteLine(await output);

        Assert.All(listening, endpoint => Assert.Equal(IPAddress.Loopback, endpoint.Address));
        Assert.Equal(ExitCodes.Success, train.ExitCode);
    }

    [Theory]
    [InlineData(null, "0.0.0.0")]
    [InlineData("127.0.0.1", "127.0.0.1")]
    public async Task The_coordinator_command_listens_at_host_for_the_ranks_and_the_metrics(string? host, string expected)
    {
        using var temp = new TempDirectory();
        string[] at = host is null ? [] : ["--host", host];
        using var coordinator = ChildProcesses.Start(Launch.SelfCommand(["coordinator", .. at, "--port", "0", "--metrics-port", "0", "job.id=host",
            "data.synthetic_tokens=20000", "run.out_dir=" + temp.Path]), new() { ["OEC_JOB_TOKEN"] = new string('k', 32) });
        var output = coordinator.StandardOutput.ReadToEndAsync();

        var listening = await ListeningSockets.WaitFor(coordinator, 2, Deadline);
        ChildProcesses.Signal(coordinator, 15); // SIGTERM
        await coordinator.WaitForExitAsync().WaitAsync(Deadline);
        log.WriteLine(await output);

        Assert.Equal(2, listening.Count);
        Assert.All(listening, endpoint => Assert.Equal(IPAddress.Parse(expected), endpoint.Address));
        if (host is not null) Assert.Contains($"ranks reach it at http://{host}:", await output);
        Assert.Equal(ExitCodes.Success, coordinator.ExitCode);
    }

    [Theory]
    [InlineData("nope")]
    [InlineData("29400")]
    [InlineData("127.0.0.256")]
    public void A_coordinator_host_that_is_not_an_IP_address_exits_2_naming_host_and_writes_nothing(string host)
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");

        var (code, _, error) = Invoke("coordinator", "--host", host, "job.id=bad-host", "data.synthetic_tokens=20000", "run.out_dir=" + outDir);

        Assert.Equal(ExitCodes.Refused, code);
        Assert.Contains($"--host '{host}': not an IP address", error);
        Assert.False(Path.Exists(outDir), $"{outDir} was created");
    }

    [Fact]
    public void A_rank_whose_OEC_RING_BIND_is_not_an_IPv4_address_exits_2_naming_it()
    {
        using var rank = ChildProcesses.Start(Launch.SelfRankCommand(), new()
        {
            ["OEC_COORDINATOR"] = "http://127.0.0.1:9", ["OEC_JOB_ID"] = "x", ["OEC_JOB_TOKEN"] = new string('t', 32),
            ["OEC_RING_BIND"] = "localhost", ["OEC_REGISTER_TIMEOUT_S"] = "1",
        });
        string error = rank.StandardError.ReadToEnd();
        Assert.True(rank.WaitForExit(Deadline));

        Assert.Equal(ExitCodes.Refused, rank.ExitCode);
        Assert.Contains("OEC_RING_BIND = 'localhost': not an IPv4 address", error);
    }
}
