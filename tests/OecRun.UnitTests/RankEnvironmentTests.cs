// A rank's place from its environment: torchrun's variables over Slurm's, the coordinator's address, and refusals
// that name the variables.
using Rank.Distributed;

namespace OecRun.UnitTests;

public class RankEnvironmentTests
{
    static RankPlacement Resolve(params (string Name, string Value)[] env) => RankEnvironment.Resolve(null, env.ToDictionary(e => e.Name, e => e.Value));

    static (string, string)[] Slurm(int procId, int ntasks, int localId, int perNode) =>
    [
        ("SLURM_PROCID", $"{procId}"), ("SLURM_NTASKS", $"{ntasks}"), ("SLURM_LOCALID", $"{localId}"),
        ("SLURM_NTASKS_PER_NODE", $"{perNode}"), ("SLURM_JOB_NODELIST", "gpu[07-09]"),
    ];

    [Fact]
    public void Torchrun_variables_give_the_rank_the_world_and_the_coordinator()
    {
        var p = Resolve(("MASTER_ADDR", "10.0.0.5"), ("MASTER_PORT", "29500"), ("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "4"));

        Assert.Equal(new RankPlacement(new Uri("http://10.0.0.5:29500"), 5, 8, 1, 4, "torchrun"), p);
    }

    [Fact]
    public void Slurm_variables_give_the_placement_and_the_first_node_is_the_coordinator_when_torchrun_s_are_absent()
    {
        var p = Resolve(Slurm(procId: 6, ntasks: 8, localId: 2, perNode: 4));

        Assert.Equal(new RankPlacement(new Uri($"http://gpu07:{RankEnvironment.DefaultPort}"), 6, 8, 2, 4, "Slurm"), p);
    }

    [Fact]
    public void Torchrun_variables_win_over_Slurm_s_and_are_not_mixed_with_them()
    {
        // torchrun started by srun: one Slurm task per node, torchrun's ranks within it.
        var p = Resolve([.. Slurm(procId: 1, ntasks: 2, localId: 0, perNode: 1), ("RANK", "7"), ("LOCAL_RANK", "3")]);

        Assert.Equal((7, 0, 3, 1, "torchrun"), (p.Rank, p.WorldSize, p.LocalRank, p.LocalWorldSize, p.Source));
    }

    [Fact]
    public void OEC_COORDINATOR_wins_over_MASTER_ADDR_and_the_option_over_both()
    {
        (string, string)[] env = [("OEC_COORDINATOR", "http://coord:1234"), ("MASTER_ADDR", "master"), ("SLURM_JOB_NODELIST", "n1")];

        Assert.Equal(new Uri("http://coord:1234"), Resolve(env).Coordinator);
        Assert.Equal(new Uri("http://given:9"), RankEnvironment.Resolve("http://given:9", env.ToDictionary(e => e.Item1, e => e.Item2)).Coordinator);
        Assert.Equal(new Uri($"http://master:{RankEnvironment.DefaultPort}"), Resolve(env[1..]).Coordinator);
    }

    [Fact]
    public void No_launcher_variables_leave_the_rank_to_the_coordinator()
    {
        var p = Resolve(("OEC_COORDINATOR", "http://127.0.0.1:29400"));

        Assert.Equal((-1, 0, 0, 1, "none"), (p.Rank, p.WorldSize, p.LocalRank, p.LocalWorldSize, p.Source));
    }

    [Theory]
    [InlineData("gpu[07-09,12],cpu1", "gpu07")]
    [InlineData("node1,node2", "node1")]
    [InlineData("rack[1-2]-n[003,5]", "rack1-n003")]
    [InlineData("localhost", "localhost")]
    public void The_first_host_of_a_Slurm_host_list_keeps_its_zero_padding(string list, string first) =>
        Assert.Equal(first, RankEnvironment.FirstHost(list));

    [Theory]
    [InlineData("4(x2),3", "0", 4)]
    [InlineData("4(x2),3", "2", 3)]
    [InlineData("2", "0", 2)]
    public void Without_SLURM_NTASKS_PER_NODE_this_node_s_count_comes_from_SLURM_TASKS_PER_NODE(string perNode, string node, int expected)
    {
        var p = Resolve(("SLURM_PROCID", "0"), ("SLURM_TASKS_PER_NODE", perNode), ("SLURM_NODEID", node), ("SLURM_JOB_NODELIST", "n1"));

        Assert.Equal(expected, p.LocalWorldSize);
    }

    [Theory]
    [InlineData("RANK=4 WORLD_SIZE=4", "RANK = 4 is not below WORLD_SIZE = 4")]
    [InlineData("RANK=1 LOCAL_RANK=2 LOCAL_WORLD_SIZE=2", "LOCAL_RANK = 2 is not in [0, LOCAL_WORLD_SIZE = 2)")]
    [InlineData("SLURM_PROCID=8 SLURM_NTASKS=8", "SLURM_PROCID = 8 is not below SLURM_NTASKS = 8")]
    [InlineData("SLURM_PROCID=-1", "SLURM_PROCID = -1: must be >= 0")]
    [InlineData("RANK=-2", "RANK = -2: must be >= 0")]
    [InlineData("SLURM_PROCID=0 SLURM_LOCALID=4 SLURM_NTASKS_PER_NODE=4", "SLURM_LOCALID = 4 is not in [0, SLURM_NTASKS_PER_NODE = 4)")]
    [InlineData("RANK=two", "RANK = 'two': not an integer")]
    [InlineData("MASTER_PORT=70000", "MASTER_PORT = 70000: not a port")]
    [InlineData("SLURM_PROCID=0 SLURM_TASKS_PER_NODE=4(x2) SLURM_NODEID=2", "SLURM_NODEID = 2: SLURM_TASKS_PER_NODE = '4(x2)' counts 2 nodes")]
    public void Conflicting_or_malformed_values_are_refused_naming_the_variables(string settings, string message)
    {
        var env = settings.Split(' ').Select(s => s.Split('=')).Select(kv => (kv[0], kv[1])).Append(("MASTER_ADDR", "m")).ToArray();

        var e = Assert.Throws<ArgumentException>(() => Resolve(env));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void Without_any_address_the_error_names_every_variable_that_would_give_one()
    {
        var e = Assert.Throws<ArgumentException>(() => Resolve(("RANK", "0")));

        foreach (string name in new[] { "--coordinator", "OEC_COORDINATOR", "MASTER_ADDR", "SLURM_JOB_NODELIST" }) Assert.Contains(name, e.Message);
    }

    [Fact]
    public void A_malformed_host_list_is_refused_naming_it() =>
        Assert.Contains("SLURM_JOB_NODELIST = 'gpu[07-'", Assert.Throws<ArgumentException>(() => RankEnvironment.FirstHost("gpu[07-")).Message);

    [Theory]
    [InlineData("JOB_COMPLETION_INDEX=3 NODE_RANK=1", 3)]
    [InlineData("NODE_RANK=1 SLURM_NODEID=2", 1)]
    [InlineData("SLURM_NODEID=2", 2)]
    public void The_node_index_comes_from_the_first_variable_that_sets_it(string settings, int expected) =>
        Assert.Equal(expected, RankEnvironment.NodeIndex(settings.Split(' ').Select(s => s.Split('=')).ToDictionary(kv => kv[0], kv => kv[1])));

    [Fact]
    public void No_node_index_variable_gives_none() => Assert.Null(RankEnvironment.NodeIndex(new Dictionary<string, string>()));

    [Theory]
    [InlineData(16, 4, null, 4)]     // a pod's or a local job's ranks share the cores the process may use
    [InlineData(3, 4, null, 1)]      // at least one
    [InlineData(12, 8, "12", 12)]    // Slurm binds each task to its --cpus-per-task cores: ProcessorCount is already its own
    [InlineData(96, 8, "12", 12)]    // unbound: the task's share still
    [InlineData(16, 4, "x", 4)]      // not a count: as without it
    public void A_ranks_threads_are_its_share_of_the_machine_or_Slurms_cpus_per_task(int processors, int localWorld, string? slurm, int expected) =>
        Assert.Equal(expected, Rank.Distributed.RankProcess.Threads(processors, localWorld, slurm));

    /// <summary>A refusal that a later generation clears restarts the rank (exit 4, which Kubernetes' pod failure policy
    /// ignores); exit 2 (FailJob) only for what no restart changes.</summary>
    [Theory]
    [InlineData(Grpc.Core.StatusCode.Aborted, null, 4)]            // its generation ended (a rendezvous timeout, a failure)
    [InlineData(Grpc.Core.StatusCode.AlreadyExists, null, 4)]      // its rank still held by the predecessor it replaces
    [InlineData(Grpc.Core.StatusCode.ResourceExhausted, null, 4)]  // the generation full before the predecessor was found lost
    [InlineData(Grpc.Core.StatusCode.DeadlineExceeded, null, 4)]   // its own wait ran out
    [InlineData(Grpc.Core.StatusCode.FailedPrecondition, "stopped", 0)]
    [InlineData(Grpc.Core.StatusCode.FailedPrecondition, "succeeded", 0)]
    [InlineData(Grpc.Core.StatusCode.FailedPrecondition, "failed", 2)]
    [InlineData(Grpc.Core.StatusCode.PermissionDenied, null, 2)]   // the token or the job id
    [InlineData(Grpc.Core.StatusCode.InvalidArgument, null, 2)]    // the world size
    public void A_refused_registration_exits_4_where_a_later_generation_takes_the_rank(Grpc.Core.StatusCode status, string? over, int expected) =>
        Assert.Equal(expected, Rank.Distributed.RankProcess.RegistrationRefused(status, over));

    /// <summary>A pod's ranks after one exited: exit 4 is an order every rank heard, and rank 0 may still be writing the
    /// model and optimizer of a stop's checkpoint (it was killed 30 s in, losing the checkpoint and costing a restart).</summary>
    [Fact]
    public void A_pods_other_ranks_get_minutes_after_a_restart_order_and_30_s_after_a_failure()
    {
        Assert.Equal(Timeout.InfiniteTimeSpan, OecRun.Launching.PodRanks.GraceAfter(0));
        Assert.True(OecRun.Launching.PodRanks.GraceAfter(4) >= TimeSpan.FromMinutes(10));
        Assert.Equal(TimeSpan.FromSeconds(30), OecRun.Launching.PodRanks.GraceAfter(1));
    }

    /// <summary>The ring waits for a peer as long as a step may take (job.step_timeout_s): rank 0's checkpoint write
    /// keeps the others waiting in the next all-reduce, which at the ring's own 60 s broke the ring for a large model.</summary>
    [Theory]
    [InlineData(600, 600)]
    [InlineData(0, 60)]   // no step timeout: the ring's own
    [InlineData(30, 60)]  // never below it
    public void The_rings_timeout_is_the_step_timeout_and_at_least_60_s(double stepTimeoutS, double expectedS) =>
        Assert.Equal(TimeSpan.FromSeconds(expectedS), Rank.Distributed.RankProcess.RingTimeout(new Job.JobOptions { StepTimeoutS = stepTimeoutS }));
}
