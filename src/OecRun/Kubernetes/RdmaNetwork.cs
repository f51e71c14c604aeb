// Multi-node NCCL over InfiniBand or RoCE for the rank pods: the RDMA device resource, IPC_LOCK, NCCL's IB settings and
// host networking, each from an `oecrun k8s` option, with a refusal that names the option and value.
using System.Text.RegularExpressions;
using k8s.Models;

namespace OecRun.Kubernetes;

public static partial class RdmaNetwork
{
    /// <summary>Checks the RDMA options against each other and the job; throws naming the option and value.</summary>
    public static void Validate(ManifestOptions o)
    {
        if (o.HostNetwork && PodPlacement.Spread(o) != "node")
            throw new ArgumentException($"--host-network with --pod-spread {PodPlacement.Spread(o)}: two rank pods on one node would share its network " +
                                        "namespace and host name, and NCCL would take them for one machine and try shared memory between pods that have none; " +
                                        "use --pod-spread node (one rank pod per node)");
        if (o.HostNetwork && o.GpusPerRank > 0 && o.NcclSocketIfname is null)
            throw new ArgumentException("--host-network: needs --nccl-socket-ifname, the node's interface for NCCL (e.g. bond0 or ens1f0; " +
                                        "`ip -br addr` on a node lists them): the default eth0 is the pod network's name, which a node may not have");
        if (o.RdmaResource is null)
        {
            foreach (var (option, given) in new[] { ("--nccl-ib-hca", o.NcclIbHca is not null), ("--nccl-ib-gid-index", o.NcclIbGidIndex is not null) })
                if (given) throw new ArgumentException($"{option}: needs --rdma-resource (without the RDMA device resource a pod sees no InfiniBand/RoCE device)");
            return;
        }
        Resource(o.RdmaResource);
        if (o.GpusPerRank == 0)
            throw new ArgumentException($"--rdma-resource = '{o.RdmaResource}': RDMA carries NCCL's traffic, and a CPU job (--gpus-per-rank 0) trains over the TCP ring");
        if (o.NcclIbDisable) throw new ArgumentException($"--nccl-ib-disable: contradicts --rdma-resource = '{o.RdmaResource}', which gives the pods InfiniBand/RoCE for NCCL");
        if (o.NcclIbHca is { } hca && !HcaList().IsMatch(hca))
            throw new ArgumentException($"--nccl-ib-hca = '{hca}': expected NCCL_IB_HCA's syntax, device names with optional :port, comma-separated, " +
                                        "optionally after ^ (exclude) or = (exact), e.g. mlx5_0,mlx5_1 or =mlx5_0:1");
        if (o.NcclIbGidIndex is < 0 or > 255) throw new ArgumentException($"--nccl-ib-gid-index = {o.NcclIbGidIndex}: must be a GID table index in [0, 255] (RoCE v2 is often 3)");
    }

    /// <summary>--rdma-resource's NAME[=COUNT]: an extended resource name (vendor-domain/name) and the devices per rank pod (default 1).</summary>
    public static (string Name, int Count) Resource(string value)
    {
        var m = ResourceSpec().Match(value);
        var count = m.Groups["count"];
        if (!m.Success || (count.Success && int.Parse(count.Value) < 1))
            throw new ArgumentException($"--rdma-resource = '{value}': expected an extended resource name vendor-domain/name with an optional =count >= 1, " +
                                        "e.g. rdma/rdma_shared_device_a or nvidia.com/hostdev=8");
        return (m.Groups["name"].Value, count.Success ? int.Parse(count.Value) : 1);
    }

    /// <summary>The RDMA devices a rank pod requests, in its limits (extended resources: requests = limits).</summary>
    public static void AddResource(ManifestOptions o, Dictionary<string, ResourceQuantity> limits)
    {
        if (o.RdmaResource is null) return;
        var (name, count) = Resource(o.RdmaResource);
        limits[name] = new($"{count}");
    }

    /// <summary>NCCL's InfiniBand/RoCE settings given: the adapters (NCCL_IB_HCA) and the RoCE GID index (NCCL_IB_GID_INDEX).</summary>
    public static IEnumerable<V1EnvVar> Env(ManifestOptions o)
    {
        if (o.NcclIbHca is not null) yield return new() { Name = "NCCL_IB_HCA", Value = o.NcclIbHca };
        if (o.NcclIbGidIndex is int gid) yield return new() { Name = "NCCL_IB_GID_INDEX", Value = $"{gid}" };
    }

    /// <summary>IPC_LOCK with RDMA: registering memory with the adapter pins it, beyond the default memlock limit.</summary>
    public static V1SecurityContext? ContainerSecurity(ManifestOptions o) =>
        o.RdmaResource is null ? null : new V1SecurityContext { Capabilities = new V1Capabilities { Add = ["IPC_LOCK"] } };

    /// <summary>--host-network: the node's interfaces (RoCE on a NIC the pod network does not expose) in the rank
    /// pods; ClusterFirstWithHostNet keeps the coordinator's Service name resolvable there.</summary>
    public static (bool? HostNetwork, string? DnsPolicy) Network(ManifestOptions o) => o.HostNetwork ? (true, "ClusterFirstWithHostNet") : (null, null);

    [GeneratedRegex(@"^(?<name>[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)(?:=(?<count>\d{1,4}))?$")]
    private static partial Regex ResourceSpec();

    [GeneratedRegex(@"^[\^=]?[A-Za-z0-9_]+(:\d+)?(,[A-Za-z0-9_]+(:\d+)?)*$")]
    private static partial Regex HcaList();
}
