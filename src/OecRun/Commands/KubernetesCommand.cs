// `oecrun k8s`: render a job's Kubernetes manifests, to stdout or as a kustomize directory.
using System.CommandLine;
using OecRun.Kubernetes;

namespace OecRun.Commands;

public static class KubernetesCommand
{
    public static Command Create()
    {
        var command = new Command("k8s", "Render the Kubernetes manifests of a job: the token Secret, the configuration, the coordinator (Deployment, Service), " +
                                         "the ranks (Indexed Job, headless Service), the shared claim, a PodMonitor and the Grafana dashboard.");
        var b = new OptionBinder<ManifestOptions>(command, new ManifestOptions());
        var d = b.Defaults;
        b.Add(new Option<string>("--name") { Description = $"The job's name: prefix of every object, job.id, run.out_dir = /shared/runs/NAME (a DNS-1035 label, at most {ManifestOptions.MaxNameLength} characters).", Required = true },
            (o, v) => o with { Name = v });
        b.Add(new Option<string>("--image") { Description = "The oecrun image of the coordinator and the ranks (deploy/docker).", Required = true }, (o, v) => o with { Image = v });
        b.Add(new Option<int>("--ranks") { Description = "World size: ranks in the job (sets job.world_size).", Required = true }, (o, v) => o with { Ranks = v });
        b.Add(new Option<int>("--ranks-per-pod") { Description = "Rank processes per pod; must divide --ranks.", DefaultValueFactory = _ => d.RanksPerPod }, (o, v) => o with { RanksPerPod = v });
        b.Add(new Option<int>("--gpus-per-rank") { Description = "GPUs per rank: 0 = a CPU job (job.backend = tcp); 1 = a GPU job (job.backend = nccl, nvidia.com/gpu = ranks per pod).", DefaultValueFactory = _ => d.GpusPerRank },
            (o, v) => o with { GpusPerRank = v });
        b.Add(CommandLine.ConfigOption("The run configuration (JSON); validated now. job.world_size, job.id, job.backend, job.resume = auto and run.out_dir are set by this command."),
            (o, v) => o with { ConfigFile = v });
        b.Add(CommandLine.OverridesArgument("train.learning_rate=1e-3 oec.method=mu_loss train.steps=2000"), (o, v) => o with { Overrides = v ?? [] });
        b.Add(new Option<string?>("--namespace") { Description = "Namespace of every object (default: the one kubectl applies to)." }, (o, v) => o with { Namespace = v });
        b.Add(new Option<string?>("--pvc") { Description = "An existing ReadWriteMany claim to mount at /shared (default: render a claim NAME-shared)." }, (o, v) => o with { Pvc = v });
        b.Add(new Option<string?>("--storage-class") { Description = "Storage class of the rendered claim; it must offer ReadWriteMany (default: the cluster's default class)." },
            (o, v) => o with { StorageClass = v });
        b.Add(new Option<string>("--storage") { Description = "Size of the rendered claim.", DefaultValueFactory = _ => d.Storage }, (o, v) => o with { Storage = v });
        b.Add(new Option<string?>("--cpu") { Description = $"CPU of each rank pod (request = limit; default: {ManifestOptions.CpuPerRank} per rank of the pod)." }, (o, v) => o with { Cpu = v });
        b.Add(new Option<string?>("--memory") { Description = $"Memory of each rank pod (request = limit; default: {ManifestOptions.MemoryGiPerRank}Gi per rank of the pod; its /dev/shm, {ManifestOptions.ShmGiPerRank}Gi per rank, counts against it)." },
            (o, v) => o with { Memory = v });
        b.Add(new Option<string?>("--nccl-socket-ifname") { Description = "NCCL_SOCKET_IFNAME of GPU jobs: the interface NCCL's bootstrap and socket transport use (default: eth0, the pod network's; required with --host-network)." },
            (o, v) => o with { NcclSocketIfname = v });
        b.Add(new Option<bool>("--nccl-ib-disable") { Description = "NCCL_IB_DISABLE=1 in GPU jobs: never use InfiniBand/RoCE (default 0: NCCL uses it where the pod has it)." },
            (o, v) => o with { NcclIbDisable = v });
        b.Add(new Option<string?>("--rdma-resource") { Description = "NAME[=COUNT]: the RDMA device plugin's resource each rank pod of a GPU job requests (e.g. rdma/rdma_shared_device_a), with the IPC_LOCK capability, for NCCL over InfiniBand/RoCE." },
            (o, v) => o with { RdmaResource = v });
        b.Add(new Option<string?>("--nccl-ib-hca") { Description = "NCCL_IB_HCA with --rdma-resource: the adapters NCCL uses, e.g. mlx5_0,mlx5_1 (default: NCCL's choice)." }, (o, v) => o with { NcclIbHca = v });
        b.Add(new Option<int?>("--nccl-ib-gid-index") { Description = "NCCL_IB_GID_INDEX with --rdma-resource: the RoCE GID index, often 3 for RoCE v2 (default: NCCL's)." }, (o, v) => o with { NcclIbGidIndex = v });
        b.Add(new Option<bool>("--host-network") { Description = "hostNetwork for the rank pods: the node's interfaces (RoCE NICs the pod network lacks); set --nccl-socket-ifname to the node's interface." },
            (o, v) => o with { HostNetwork = v });
        b.Add(new Option<string>("--nccl-debug") { Description = "NCCL_DEBUG of GPU jobs: VERSION, WARN, INFO or TRACE.", DefaultValueFactory = _ => d.NcclDebug }, (o, v) => o with { NcclDebug = v });
        b.Add(new Option<string?>("--bundle") { Description = "The unpacked bundle of build/publish-bundle.sh on the shared volume, e.g. /shared/oec/oecrun-linux-x64: the pods run its oecrun in --image, a stock image (default: the image's own oecrun)." },
            (o, v) => o with { Bundle = v });
        b.Add(new Option<string?>("--libtorch") { Description = "OEC_LIBTORCH of the rank pods: python (the image's PyTorch, for a bundle without libtorch) or a libtorch lib directory (default: the image's)." },
            (o, v) => o with { LibTorch = v });
        b.Add(new Option<int>("--port") { Description = "The coordinator's gRPC port.", DefaultValueFactory = _ => d.Port }, (o, v) => o with { Port = CommandLine.Port("--port", v) });
        b.Add(new Option<int>("--metrics-port") { Description = "The coordinator's /metrics and /live port.", DefaultValueFactory = _ => d.MetricsPort }, (o, v) => o with { MetricsPort = CommandLine.Port("--metrics-port", v) });
        b.Add(new Option<string?>("--token-secret") { Description = "An existing Secret with the job token under the key 'token' (default: render a Secret NAME-token with a fresh random token)." },
            (o, v) => o with { TokenSecret = v });
        b.Add(new Option<string?>("--queue") { Description = $"Kueue's LocalQueue for the ranks: label {PodPlacement.QueueLabel}, the Job created suspended, all rank pods admitted together." },
            (o, v) => o with { Queue = v });
        b.Add(new Option<string?>("--priority-class") { Description = "priorityClassName of the coordinator and rank pods." }, (o, v) => o with { PriorityClass = v });
        b.Add(new Option<string[]>("--node-selector") { Description = "key=value: a node label the rank pods require (repeatable)." }, (o, v) => o with { NodeSelector = v ?? [] });
        b.Add(new Option<string[]>("--toleration") { Description = "key[=value][:effect]: a taint the rank pods tolerate (repeatable; GPU jobs tolerate nvidia.com/gpu)." },
            (o, v) => o with { Tolerations = v ?? [] });
        b.Add(new Option<string?>("--pod-spread") { Description = "node: one rank pod per node (required pod anti-affinity; the default for GPU jobs); soft: spread over nodes when possible (topology spread; the default for CPU jobs); none." },
            (o, v) => o with { PodSpread = v });
        b.Add(new Option<string?>("--service-account") { Description = "serviceAccountName of the coordinator and rank pods." }, (o, v) => o with { ServiceAccount = v });
        b.Add(new Option<string[]>("--image-pull-secret") { Description = "A Secret with the registry's credentials for the image (repeatable)." }, (o, v) => o with { ImagePullSecrets = v ?? [] });
        b.Add(new Option<int?>("--ttl-seconds-after-finished") { Description = "Delete the rank Job and its pods this many seconds after it finished (default: kept)." },
            (o, v) => o with { TtlSecondsAfterFinished = v });
        b.Add(new Option<long?>("--active-deadline-seconds") { Description = "The rank Job's time limit from its start (under Kueue: from admission); past it the Job fails (default: none)." },
            (o, v) => o with { ActiveDeadlineSeconds = v });
        var output = new Option<string?>("--out") { Description = "Directory for one YAML file per object and a kustomization.yaml (default: one stream to stdout)." };
        command.Options.Add(output);
        command.SetGuardedAction(parse =>
        {
            var manifests = JobManifests.Build(b.Bind(parse));
            if (parse.GetValue(output) is not string dir)
            {
                Console.Write(ManifestFiles.ToYaml(manifests));
                return 0;
            }
            ManifestFiles.Write(manifests, dir, ManifestFiles.Quote(RenderedWith(parse, command)));
            Console.WriteLine($"wrote {manifests.Count} objects and kustomization.yaml to {dir}");
            return 0;
        });
        return command;
    }

    /// <summary>The command line without the command and --out, so that a rendering (this one's directory, `oecrun slurm`'s
    /// script) records how to render it again.</summary>
    public static List<string> RenderedWith(ParseResult parse, Command command)
    {
        var tokens = parse.Tokens.Select(t => t.Value).ToList();
        if (tokens.FirstOrDefault() == command.Name) tokens.RemoveAt(0);
        int at = tokens.IndexOf("--out");
        if (at >= 0) tokens.RemoveRange(at, Math.Min(2, tokens.Count - at));
        return tokens;
    }
}
