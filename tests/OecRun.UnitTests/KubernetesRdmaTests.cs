// `oecrun k8s`'s RDMA options in the rendered objects (strictly loaded into the client's models): the device resource,
// IPC_LOCK, NCCL's InfiniBand/RoCE variables and host networking of the rank pods, and refusals of what cannot work.
using k8s.Models;
using static OecRun.UnitTests.CommandLineRun;
using static OecRun.UnitTests.KubernetesObjects;

namespace OecRun.UnitTests;

public class KubernetesRdmaTests
{
    static readonly string[] Gpu = ["k8s", "--name", "job", "--image", "img", "--ranks", "16", "--ranks-per-pod", "8", "--gpus-per-rank", "1"];

    static (V1PodSpec Pod, V1Container Rank, V1PodSpec Coordinator) Render(params string[] args)
    {
        var (code, output, error) = Invoke(args);
        Assert.True(code == 0, error);
        var objects = Load(output);
        var job = Invariants(objects, gpusPerRank: 1);
        var pod = job.Spec.Template.Spec;
        return (pod, Assert.Single(pod.Containers), Assert.Single(objects.OfType<V1Deployment>()).Spec.Template.Spec);
    }

    [Fact]
    public void An_rdma_resource_is_requested_by_each_rank_pod_with_IPC_LOCK_and_NCCLs_IB_settings()
    {
        var (_, rank, coordinator) = Render([.. Gpu, "--rdma-resource", "rdma/rdma_shared_device_a", "--nccl-ib-hca", "mlx5_0,mlx5_1", "--nccl-ib-gid-index", "3"]);

        Assert.Equal("1", rank.Resources.Limits["rdma/rdma_shared_device_a"].ToString());
        Assert.Equal("1", rank.Resources.Requests["rdma/rdma_shared_device_a"].ToString());
        Assert.Equal(["IPC_LOCK"], rank.SecurityContext.Capabilities.Add);
        Assert.Equal(("0", "mlx5_0,mlx5_1", "3"), (Env(rank, "NCCL_IB_DISABLE").Value, Env(rank, "NCCL_IB_HCA").Value, Env(rank, "NCCL_IB_GID_INDEX").Value));
        Assert.Null(Assert.Single(coordinator.Containers).SecurityContext); // the coordinator sends no NCCL traffic
    }

    [Fact]
    public void An_rdma_resource_count_is_the_devices_of_one_rank_pod()
    {
        var (_, rank, _) = Render([.. Gpu, "--rdma-resource", "nvidia.com/hostdev=8"]);

        Assert.Equal("8", rank.Resources.Limits["nvidia.com/hostdev"].ToString());
        Assert.DoesNotContain(rank.Env, e => e.Name is "NCCL_IB_HCA" or "NCCL_IB_GID_INDEX"); // NCCL's own choice
    }

    [Fact]
    public void Without_rdma_options_the_rank_pods_ask_for_no_device_capability_or_host_network()
    {
        var (pod, rank, _) = Render(Gpu);

        Assert.Equal(["cpu", "memory", "nvidia.com/gpu"], rank.Resources.Limits.Keys.Order());
        Assert.Null(rank.SecurityContext);
        Assert.Null(pod.HostNetwork);
        Assert.Null(pod.DnsPolicy);
    }

    [Fact]
    public void Host_network_puts_the_rank_pods_on_the_nodes_network_and_keeps_cluster_DNS()
    {
        var (pod, rank, coordinator) = Render([.. Gpu, "--host-network", "--nccl-socket-ifname", "bond0", "--rdma-resource", "rdma/roce"]);

        Assert.Equal((true, "ClusterFirstWithHostNet"), (pod.HostNetwork, pod.DnsPolicy));
        Assert.Equal("bond0", Env(rank, "NCCL_SOCKET_IFNAME").Value);
        Assert.Null(coordinator.HostNetwork);
    }

    [Theory]
    [InlineData("--rdma-resource = 'rdma'", "--rdma-resource", "rdma")]
    [InlineData("--rdma-resource = 'rdma/dev=0'", "--rdma-resource", "rdma/dev=0")]
    [InlineData("--rdma-resource = 'RDMA/dev'", "--rdma-resource", "RDMA/dev")]
    [InlineData("--nccl-ib-hca: needs --rdma-resource", "--nccl-ib-hca", "mlx5_0")]
    [InlineData("--nccl-ib-gid-index: needs --rdma-resource", "--nccl-ib-gid-index", "3")]
    public void Bad_rdma_options_exit_with_2_naming_the_option_and_value(string expected, string option, string value) =>
        AssertRefused(expected, [.. Gpu, option, value]);

    [Theory]
    [InlineData("soft")]
    [InlineData("none")]
    public void Host_network_with_pods_that_may_share_a_node_exits_with_2(string spread) =>
        AssertRefused($"--host-network with --pod-spread {spread}: two rank pods on one node would share its network namespace", [.. Gpu, "--host-network", "--pod-spread", spread]);

    /// <summary>eth0 is the pod network's name; on the node's network NCCL would find no such interface and fail at
    /// its first communicator, after the pods were scheduled.</summary>
    [Fact]
    public void Host_network_without_the_nodes_interface_for_NCCL_exits_with_2() =>
        AssertRefused("--host-network: needs --nccl-socket-ifname, the node's interface for NCCL", [.. Gpu, "--host-network"]);

    [Theory]
    [InlineData("--nccl-ib-hca = 'mlx5 0'", "--nccl-ib-hca", "mlx5 0")]
    [InlineData("--nccl-ib-gid-index = 256", "--nccl-ib-gid-index", "256")]
    [InlineData("--nccl-ib-disable: contradicts --rdma-resource", "--nccl-ib-disable", null)]
    public void Rdma_settings_that_cannot_work_exit_with_2(string expected, string option, string? value) =>
        AssertRefused(expected, [.. Gpu, "--rdma-resource", "rdma/hca", option, .. value is null ? Array.Empty<string>() : [value]]);

    [Fact]
    public void An_rdma_resource_in_a_cpu_job_exits_with_2_and_says_it_trains_over_tcp() =>
        AssertRefused("--rdma-resource = 'rdma/hca': RDMA carries NCCL's traffic, and a CPU job (--gpus-per-rank 0) trains over the TCP ring",
            "k8s", "--name", "job", "--image", "img", "--ranks", "4", "--rdma-resource", "rdma/hca");
}
