// The options of `oecrun k8s`: what a job's Kubernetes manifests are made from. Defaults live here once; the CLI shows them.
using System.Text.RegularExpressions;
using k8s.Models;

namespace OecRun.Kubernetes;

public sealed partial record ManifestOptions
{
    /// <summary>The job's name: prefix of every object's name, the job id, and run.out_dir = /shared/runs/{name}.</summary>
    public string Name { get; init; } = "";
    public string Image { get; init; } = "";
    /// <summary>World size: ranks in the job.</summary>
    public int Ranks { get; init; }
    /// <summary>Rank processes per pod (`oecrun rank --local-ranks`), each on its own GPU in a GPU job.</summary>
    public int RanksPerPod { get; init; } = 1;
    /// <summary>GPUs per rank; 0 = a CPU job (train.device = cpu, job.backend = tcp), 1 = a GPU job (train.device = cuda, job.backend = nccl).</summary>
    public int GpusPerRank { get; init; }
    /// <summary>The run configuration file (JSON); null = the defaults.</summary>
    public string? ConfigFile { get; init; }
    /// <summary>section.key=value settings over the file, as for `train`.</summary>
    public IReadOnlyList<string> Overrides { get; init; } = [];
    /// <summary>Namespace of every object; null = the one kubectl applies to.</summary>
    public string? Namespace { get; init; }
    /// <summary>An existing ReadWriteMany claim for /shared; null = render a claim {name}-shared.</summary>
    public string? Pvc { get; init; }
    /// <summary>Storage class of the rendered claim (must offer ReadWriteMany); null = the cluster's default class.</summary>
    public string? StorageClass { get; init; }
    public string Storage { get; init; } = "100Gi";
    /// <summary>CPU and memory of each rank pod (requests = limits, so a pod is never squeezed mid-step); null =
    /// <see cref="CpuPerRank"/> and <see cref="MemoryGiPerRank"/> for each of the pod's ranks.</summary>
    public string? Cpu { get; init; }
    public string? Memory { get; init; }
    /// <summary>The defaults of a rank: a libtorch process with its intra-op threads, its CUDA context, pinned
    /// buffers and the data's pages.</summary>
    public const int CpuPerRank = 4, MemoryGiPerRank = 16;
    /// <summary>A rank pod's /dev/shm (an in-memory emptyDir, counted against the pod's memory): NCCL's
    /// shared-memory transport between the pod's GPUs.</summary>
    public const int ShmGiPerRank = 1;
    public string PodCpu => Cpu ?? $"{CpuPerRank * RanksPerPod}";
    public string PodMemory => Memory ?? $"{MemoryGiPerRank * RanksPerPod}Gi";
    /// <summary>NCCL's interface for bootstrap and socket traffic; null = eth0, the pod network's interface under the
    /// common CNIs (with --host-network the node's interface names vary, so it must be given).</summary>
    public string? NcclSocketIfname { get; init; }
    public string SocketIfname => NcclSocketIfname ?? "eth0";
    /// <summary>true: NCCL never uses InfiniBand/RoCE (for nodes whose IB devices pods cannot use).</summary>
    public bool NcclIbDisable { get; init; }
    public string NcclDebug { get; init; } = "WARN";
    /// <summary>The RDMA device plugin's resource as NAME[=COUNT] (e.g. rdma/rdma_shared_device_a), requested by each
    /// rank pod of a GPU job with IPC_LOCK, for NCCL over InfiniBand/RoCE; null = no RDMA devices requested.</summary>
    public string? RdmaResource { get; init; }
    /// <summary>NCCL_IB_HCA: the adapters NCCL uses (e.g. mlx5_0,mlx5_1); null = NCCL's choice. Needs RdmaResource.</summary>
    public string? NcclIbHca { get; init; }
    /// <summary>NCCL_IB_GID_INDEX: the RoCE GID table index (RoCE v2 is often 3); null = NCCL's default. Needs RdmaResource.</summary>
    public int? NcclIbGidIndex { get; init; }
    /// <summary>hostNetwork for the rank pods: the node's network interfaces instead of the pod network's.</summary>
    public bool HostNetwork { get; init; }
    /// <summary>The published bundle's directory on the shared volume: the containers run its oecrun in Image, a stock
    /// image; null = the image's own oecrun (its entrypoint).</summary>
    public string? Bundle { get; init; }
    /// <summary>OEC_LIBTORCH of the rank pods: python or a libtorch lib directory; null = the image's setting.</summary>
    public string? LibTorch { get; init; }
    /// <summary>The coordinator's gRPC port (ranks) and Prometheus port (/metrics, /live).</summary>
    public int Port { get; init; } = 29400;
    public int MetricsPort { get; init; } = 9400;
    /// <summary>An existing Secret holding the job token under the key `token`; null = render one with a fresh token.</summary>
    public string? TokenSecret { get; init; }

    /// <summary>Kueue's LocalQueue for the rank Job (label kueue.x-k8s.io/queue-name; the Job is created suspended and
    /// Kueue starts all its pods together when the queue admits it); null = no queue.</summary>
    public string? Queue { get; init; }
    /// <summary>The PriorityClass of the coordinator and rank pods; null = the cluster's default.</summary>
    public string? PriorityClass { get; init; }
    /// <summary>key=value labels a node must have to run a rank pod.</summary>
    public IReadOnlyList<string> NodeSelector { get; init; } = [];
    /// <summary>Taints the rank pods tolerate, as key[=value][:effect] (GPU jobs also tolerate nvidia.com/gpu).</summary>
    public IReadOnlyList<string> Tolerations { get; init; } = [];
    /// <summary>node, soft or none (<see cref="PodPlacement.Spreads"/>); null = node for GPU jobs, soft for CPU jobs.</summary>
    public string? PodSpread { get; init; }
    /// <summary>The ServiceAccount of the coordinator and rank pods; null = the namespace's default.</summary>
    public string? ServiceAccount { get; init; }
    /// <summary>Secrets with the registry credentials to pull the image.</summary>
    public IReadOnlyList<string> ImagePullSecrets { get; init; } = [];
    /// <summary>Seconds after the rank Job finished (succeeded or failed) until Kubernetes deletes it and its pods; null = kept.</summary>
    public int? TtlSecondsAfterFinished { get; init; }
    /// <summary>The rank Job's time limit in seconds from its start (from admission, under Kueue); null = none.</summary>
    public long? ActiveDeadlineSeconds { get; init; }

    /// <summary>Rank pods of the Indexed Job.</summary>
    public int Pods => Ranks / RanksPerPod;

    /// <summary>
    /// The longest name for which every derived name fits Kubernetes' 63 characters: {name}-coordinator (a Service), and
    /// the rank pods' host names {name}-ranks-{index} with an index of up to 5 digits (world size at most
    /// job.world_size's 65536: 40 + 7 + 5 = 52), and the Job's pod names {name}-ranks-{index}-{5 random} (58).
    /// </summary>
    public const int MaxNameLength = 40;

    // DNS-1035 label: Service names must start with a letter, so the stricter of Kubernetes' two label rules.
    [GeneratedRegex("^[a-z]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex Dns1035Label();

    public void Validate()
    {
        if (Name.Length > MaxNameLength || !Dns1035Label().IsMatch(Name))
            throw new ArgumentException($"--name = '{Name}': must be a DNS-1035 label of at most {MaxNameLength} characters " +
                                        "(lowercase letters, digits and '-', starting with a letter and ending with a letter or digit)");
        if (string.IsNullOrWhiteSpace(Image)) throw new ArgumentException($"--image = '{Image}': must name the image, e.g. registry.example.com/oec:gpu");
        if (Ranks < 1 || Ranks > Job.JobOptions.MaxWorldSize)
            throw new ArgumentException($"--ranks = {Ranks}: must be in [1, {Job.JobOptions.MaxWorldSize}] (job.world_size's range)");
        if (RanksPerPod < 1) throw new ArgumentException($"--ranks-per-pod = {RanksPerPod}: must be at least 1");
        if (Ranks % RanksPerPod != 0)
            throw new ArgumentException($"--ranks = {Ranks}: not divisible by --ranks-per-pod = {RanksPerPod} (every rank pod runs the same number of ranks)");
        if (GpusPerRank is not (0 or 1))
            throw new ArgumentException($"--gpus-per-rank = {GpusPerRank}: must be 0 (a CPU job) or 1 (a rank trains on one GPU, cuda:LOCAL_RANK; " +
                                        "more GPUs per pod come with --ranks-per-pod)");
        foreach (var (option, value) in new[] { ("--port", Port), ("--metrics-port", MetricsPort) })
            if (value is < 1 or > 65535) throw new ArgumentException($"{option} = {value}: must be a port in [1, 65535]");
        if (Port == MetricsPort) throw new ArgumentException($"--metrics-port = {MetricsPort}: must differ from --port = {Port}");
        foreach (var (option, value) in new[] { ("--namespace", Namespace), ("--pvc", Pvc), ("--storage-class", StorageClass), ("--token-secret", TokenSecret),
                     ("--priority-class", PriorityClass), ("--service-account", ServiceAccount) }.Concat(ImagePullSecrets.Select(s => ("--image-pull-secret", (string?)s))))
            if (value is not null && (value.Length > 253 || !Dns1123Subdomain().IsMatch(value)))
                throw new ArgumentException($"{option} = '{value}': must be a Kubernetes object name (lowercase letters, digits, '-' and '.', at most 253)");
        foreach (var (option, value) in new[] { ("--cpu", PodCpu), ("--storage", Storage) })
            Quantity(option, value);
        decimal shm = (decimal)ShmGiPerRank * RanksPerPod * (1L << 30);
        if (Quantity("--memory", PodMemory).ToDecimal() <= shm)
            throw new ArgumentException($"--memory = '{PodMemory}': a rank pod's memory must exceed its /dev/shm, {ShmGiPerRank}Gi per rank " +
                                        $"({ShmGiPerRank * RanksPerPod}Gi for --ranks-per-pod = {RanksPerPod}), which counts against it");
        if (NcclSocketIfname is not null && string.IsNullOrWhiteSpace(NcclSocketIfname))
            throw new ArgumentException($"--nccl-socket-ifname = '{NcclSocketIfname}': must name an interface, e.g. eth0");
        if (NcclDebug is not ("VERSION" or "WARN" or "INFO" or "TRACE"))
            throw new ArgumentException($"--nccl-debug = '{NcclDebug}': expected VERSION, WARN, INFO or TRACE");
        PodPlacement.Validate(this);
        RdmaNetwork.Validate(this);
        BundleRun.Validate(this);
    }

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    internal static partial Regex Dns1123Subdomain();

    /// <summary>A Kubernetes quantity ("4", "500m", "16Gi"), parsed by the client library's own parser.</summary>
    public static ResourceQuantity Quantity(string option, string value)
    {
        try
        {
            var quantity = new ResourceQuantity(value);
            if (quantity.ToDecimal() <= 0) throw new FormatException("not positive");
            return quantity;
        }
        catch (Exception e) when (e is FormatException or ArgumentException or OverflowException)
        {
            throw new ArgumentException($"{option} = '{value}': not a positive Kubernetes quantity such as 4, 500m or 16Gi");
        }
    }
}
