// A job's Kubernetes objects, built with the official client's models: the token Secret, the configuration, the coordinator
// (Deployment + Service), the ranks (Indexed Job + headless Service), the shared claim, a PodMonitor and the Grafana dashboard.
using Job;
using System.Security.Cryptography;
using k8s.Models;
using Rank.Configuration;

namespace OecRun.Kubernetes;

/// <param name="File">The object's file in a rendered directory.</param>
public sealed record Manifest(string File, object Object);

public static class JobManifests
{
    /// <summary>Where every pod mounts the shared volume: run.out_dir and the data must be on it.</summary>
    public const string SharedMount = "/shared";
    /// <summary>Where the coordinator reads job.json from the ConfigMap.</summary>
    public const string ConfigMount = "/etc/oec";
    public const string ConfigKey = "job.json";
    /// <summary>The key of the job token in its Secret (also in a Secret given with --token-secret).</summary>
    public const string TokenKey = "token";
    public const string DashboardKey = "oec-dashboard.json";
    /// <summary>The annotation in which an Indexed Job gives each pod its index (also JOB_COMPLETION_INDEX).</summary>
    public const string CompletionIndexAnnotation = "batch.kubernetes.io/job-completion-index";
    // Both images run as this user (deploy/docker); fsGroup makes the shared volume writable by it.
    const long ImageUser = 1000;
    // SIGTERM stops the job at a checkpoint: the ranks finish their step and write one before the coordinator exits.
    const long CoordinatorGraceSeconds = 600;
    // SIGTERM to a rank pod (evicted, preempted, its node drained): every rank stops at a checkpoint, which must be
    // written before the kubelet kills the pod; the job then continues from it in a new generation.
    const long RankGraceSeconds = 600;
    // The coordinator holds the data order and the job's state, not the model: small next to a rank.
    const string CoordinatorCpu = "1", CoordinatorMemory = "4Gi";
    // A rank that exits ExitCodes.Refused has a bad configuration (no retry helps); ExitCodes.Recreate (told to exit by the
    // coordinator, or lost it) is the coordinator's own recovery, counted by it against job.max_restarts, so the Job must
    // recreate those pods without counting them.

    public static string CoordinatorName(ManifestOptions o) => $"{o.Name}-coordinator";
    public static string RanksName(ManifestOptions o) => $"{o.Name}-ranks";
    public static string ConfigName(ManifestOptions o) => $"{o.Name}-config";
    public static string TokenSecretName(ManifestOptions o) => o.TokenSecret ?? $"{o.Name}-token";
    public static string ClaimName(ManifestOptions o) => o.Pvc ?? $"{o.Name}-shared";

    /// <summary>Every object of the job, in the order kubectl should create them (Secret and claim before the pods).</summary>
    public static IReadOnlyList<Manifest> Build(ManifestOptions o)
    {
        o.Validate();
        var run = Resolve(o);
        var objects = new List<Manifest>();
        if (o.TokenSecret is null) objects.Add(new("token-secret.yaml", TokenSecret(o)));
        if (o.Pvc is null) objects.Add(new("shared-pvc.yaml", SharedClaim(o)));
        objects.Add(new("config.yaml", new V1ConfigMap
        {
            ApiVersion = "v1", Kind = "ConfigMap", Metadata = Meta(o, ConfigName(o), "coordinator"),
            Data = new Dictionary<string, string> { [ConfigKey] = run.ToJson() + "\n" },
        }));
        objects.Add(new("coordinator-deployment.yaml", CoordinatorDeployment(o)));
        objects.Add(new("coordinator-service.yaml", CoordinatorService(o)));
        objects.Add(new("ranks-service.yaml", RanksService(o)));
        objects.Add(new("ranks-job.yaml", RanksJob(o, run.Job.MaxRestarts)));
        objects.Add(new("podmonitor.yaml", PodMonitor(o)));
        objects.Add(new("dashboard.yaml", Dashboard(o)));
        return objects;
    }

    /// <summary>
    /// The run configuration the coordinator gets: the file and overrides, then the renderer's settings (world size, id,
    /// run.out_dir on the shared volume, resume so that a recreated coordinator continues; with a queue, a day's
    /// job.startup_timeout_s unless one is set), validated as at start-up.
    /// </summary>
    public static RunConfig Resolve(ManifestOptions o)
    {
        string[] rendered = [$"job.world_size={o.Ranks}", $"job.id={o.Name}", $"run.out_dir={SharedMount}/runs/{o.Name}", "job.resume=auto", .. DeviceSettings(o.GpusPerRank > 0)];
        var run = RunConfig.Load(o.ConfigFile, [.. o.Overrides, .. rendered]);
        if (o.Queue is not null && run.Job.StartupTimeoutS == 0) // the Job may wait in its queue: the first rank's wait covers it
            run = run with { Job = run.Job with { StartupTimeoutS = QueuedStartupTimeoutS } };
        ParallelLayout.Of(run.Job).ReplicaBatch(run.Train.BatchSize); // fails at render time, not in the pod
        foreach (var (key, pattern) in new[] { ("data.train_shards", run.Data.TrainShards), ("data.val_shards", run.Data.ValShards) })
            if (run.Data.Source == "shards" && !pattern!.StartsWith(SharedMount + "/", StringComparison.Ordinal))
                throw new ArgumentException($"{key} = '{pattern}': must be under {SharedMount}/, the shared volume, where the coordinator and every rank read the same files");
        return run;
    }

    /// <summary>job.startup_timeout_s of a queued rank Job unless set: a day in the queue before the job fails.</summary>
    public const double QueuedStartupTimeoutS = 86400;

    /// <summary>The device and backend of a rendered job: a GPU job trains on cuda over NCCL, a CPU job over the TCP ring.</summary>
    public static string[] DeviceSettings(bool gpu) => gpu ? ["train.device=cuda", "job.backend=nccl"] : ["train.device=cpu", "job.backend=tcp"];

    static Dictionary<string, string> Labels(ManifestOptions o, string component) => new()
    {
        ["app.kubernetes.io/name"] = "oec",
        ["app.kubernetes.io/instance"] = o.Name,
        ["app.kubernetes.io/component"] = component,
    };

    static V1ObjectMeta Meta(ManifestOptions o, string name, string component, Dictionary<string, string>? extraLabels = null)
    {
        var labels = Labels(o, component);
        foreach (var (key, value) in extraLabels ?? []) labels[key] = value;
        return new V1ObjectMeta { Name = name, NamespaceProperty = o.Namespace, Labels = labels };
    }

    static V1Secret TokenSecret(ManifestOptions o) => new()
    {
        ApiVersion = "v1", Kind = "Secret", Metadata = Meta(o, TokenSecretName(o), "coordinator"), Type = "Opaque",
        // 24 random bytes as 48 hex characters: the coordinator needs at least 16.
        StringData = new Dictionary<string, string> { [TokenKey] = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(24)) },
    };

    static V1PersistentVolumeClaim SharedClaim(ManifestOptions o) => new()
    {
        ApiVersion = "v1", Kind = "PersistentVolumeClaim", Metadata = Meta(o, ClaimName(o), "shared"),
        Spec = new V1PersistentVolumeClaimSpec
        {
            AccessModes = ["ReadWriteMany"], // mounted by the coordinator and every rank pod, on any node
            StorageClassName = o.StorageClass,
            Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = ManifestOptions.Quantity("--storage", o.Storage) } },
        },
    };

    static V1EnvVar TokenEnv(ManifestOptions o) => new()
    {
        Name = "OEC_JOB_TOKEN",
        ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = TokenSecretName(o), Key = TokenKey } },
    };

    static V1PodSecurityContext SecurityContext() => new() { RunAsNonRoot = true, RunAsUser = ImageUser, RunAsGroup = ImageUser, FsGroup = ImageUser };

    static V1Volume SharedVolume(ManifestOptions o) => new()
    {
        Name = "shared", PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = ClaimName(o) },
    };

    static V1Deployment CoordinatorDeployment(ManifestOptions o)
    {
        var labels = Labels(o, "coordinator");
        V1Probe Grpc(int period, int failures, int? delay = null, string? service = null) => new()
        {
            Grpc = new V1GRPCAction { Port = o.Port, Service = service }, // grpc.health.v1 on the ranks' port, served without the token
            PeriodSeconds = period, FailureThreshold = failures, InitialDelaySeconds = delay,
        };
        var container = new V1Container
        {
            Name = "coordinator", Image = o.Image, Command = BundleRun.Command(o),
            Args = ["coordinator", "--port", $"{o.Port}", "--metrics-port", $"{o.MetricsPort}", "--config", $"{ConfigMount}/{ConfigKey}", "--linger"],
            Env = [TokenEnv(o), .. BundleRun.Env(o, rank: false)],
            Ports =
            [
                new V1ContainerPort { Name = "grpc", ContainerPort = o.Port },
                new V1ContainerPort { Name = "metrics", ContainerPort = o.MetricsPort },
            ],
            ReadinessProbe = Grpc(period: 5, failures: 3), // the job's state: not ready once it failed
            // Generous: the coordinator cuts the data into sequences before it serves; a wedged one is restarted after 30 s
            // more. The process, not the job: a coordinator whose job failed lingers to say why, and a restarted one
            // would resume the job it failed.
            LivenessProbe = Grpc(period: 10, failures: 3, delay: 60, service: Coordinator.CoordinatorHost.LivenessService),
            Resources = new V1ResourceRequirements
            {
                Requests = new Dictionary<string, ResourceQuantity> { ["cpu"] = new(CoordinatorCpu), ["memory"] = new(CoordinatorMemory) },
                Limits = new Dictionary<string, ResourceQuantity> { ["memory"] = new(CoordinatorMemory) },
            },
            VolumeMounts =
            [
                new V1VolumeMount { Name = "shared", MountPath = SharedMount },
                new V1VolumeMount { Name = "config", MountPath = ConfigMount, ReadOnlyProperty = true },
            ],
        };
        return new V1Deployment
        {
            ApiVersion = "apps/v1", Kind = "Deployment", Metadata = Meta(o, CoordinatorName(o), "coordinator"),
            Spec = new V1DeploymentSpec
            {
                Replicas = 1,
                // Never two coordinators of one job: the old one stops (at a checkpoint) before the new one starts.
                Strategy = new V1DeploymentStrategy { Type = "Recreate" },
                Selector = new V1LabelSelector { MatchLabels = labels },
                Template = new V1PodTemplateSpec
                {
                    Metadata = new V1ObjectMeta { Labels = labels },
                    Spec = new V1PodSpec
                    {
                        Containers = [container], SecurityContext = SecurityContext(), TerminationGracePeriodSeconds = CoordinatorGraceSeconds,
                        PriorityClassName = o.PriorityClass, ServiceAccountName = o.ServiceAccount, ImagePullSecrets = PodPlacement.ImagePullSecrets(o),
                        Volumes = [SharedVolume(o), new V1Volume { Name = "config", ConfigMap = new V1ConfigMapVolumeSource { Name = ConfigName(o) } }],
                    },
                },
            },
        };
    }

    static V1Service CoordinatorService(ManifestOptions o) => new()
    {
        ApiVersion = "v1", Kind = "Service", Metadata = Meta(o, CoordinatorName(o), "coordinator"),
        Spec = new V1ServiceSpec
        {
            Selector = Labels(o, "coordinator"),
            // Not ready once its job failed, but still the one to ask: a rank pod started after the failure (a late image
            // pull, a pod pending for GPUs) must hear "job over" and exit 2 (FailJob), not find no endpoint, exit 5
            // (ignored) and be recreated for ever.
            PublishNotReadyAddresses = true,
            Ports =
            [
                new V1ServicePort { Name = "grpc", Port = o.Port, TargetPort = "grpc", AppProtocol = "kubernetes.io/h2c" },
                new V1ServicePort { Name = "metrics", Port = o.MetricsPort, TargetPort = "metrics", AppProtocol = "http" },
            ],
        },
    };

    /// <summary>Headless: no virtual IP, only the DNS names {name}-ranks-{index}.{name}-ranks of the rank pods.</summary>
    static V1Service RanksService(ManifestOptions o) => new()
    {
        ApiVersion = "v1", Kind = "Service", Metadata = Meta(o, RanksName(o), "rank"),
        Spec = new V1ServiceSpec { ClusterIP = "None", Selector = Labels(o, "rank") },
    };

    static V1Job RanksJob(ManifestOptions o, int maxRestarts)
    {
        var labels = Labels(o, "rank");
        bool gpu = o.GpusPerRank > 0;
        var limits = new Dictionary<string, ResourceQuantity> { ["cpu"] = new(o.PodCpu), ["memory"] = new(o.PodMemory) };
        if (gpu) limits["nvidia.com/gpu"] = new($"{o.GpusPerRank * o.RanksPerPod}");
        RdmaNetwork.AddResource(o, limits);
        List<V1EnvVar> env =
        [
            new() { Name = "OEC_COORDINATOR", Value = $"http://{CoordinatorName(o)}:{o.Port}" },
            new() { Name = "OEC_JOB_ID", Value = o.Name },
            TokenEnv(o),
            new() { Name = "WORLD_SIZE", Value = $"{o.Ranks}" },
            // torchrun's names of the same: a rank started by a torchrun-style launcher in this pod joins too.
            new() { Name = "MASTER_ADDR", Value = CoordinatorName(o) },
            new() { Name = "MASTER_PORT", Value = $"{o.Port}" },
            new() { Name = "NODE_RANK", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = $"metadata.annotations['{CompletionIndexAnnotation}']" } } },
            // Peers reach a rank at its pod's IP (the collectives' ring listens there on an ephemeral port).
            new() { Name = "OEC_RANK_HOST", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "status.podIP" } } },
            .. BundleRun.Env(o, rank: true),
        ];
        if (gpu)
            env.AddRange(
            [
                new() { Name = "NCCL_SOCKET_IFNAME", Value = o.SocketIfname },
                new() { Name = "NCCL_IB_DISABLE", Value = o.NcclIbDisable ? "1" : "0" },
                new() { Name = "NCCL_DEBUG", Value = o.NcclDebug },
                .. RdmaNetwork.Env(o),
            ]);
        var container = new V1Container
        {
            Name = "rank", Image = o.Image, Command = BundleRun.Command(o), Args = ["rank", "--local-ranks", $"{o.RanksPerPod}"], Env = env, SecurityContext = RdmaNetwork.ContainerSecurity(o),
            Resources = new V1ResourceRequirements { Requests = new Dictionary<string, ResourceQuantity>(limits), Limits = limits },
            VolumeMounts =
            [
                new V1VolumeMount { Name = "shared", MountPath = SharedMount },
                new V1VolumeMount { Name = "dshm", MountPath = "/dev/shm" },
            ],
        };
        List<V1PodFailurePolicyRule> rules =
        [
            // Evicted, preempted or its node drained: its ranks stop at a checkpoint (or are lost) and the coordinator
            // continues the job from it (or restarts the generation) itself.
            new() { Action = "Ignore", OnPodConditions = [new V1PodFailurePolicyOnPodConditionsPattern { Type = "DisruptionTarget", Status = "True" }] },
            new() { Action = "Ignore", OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement { ContainerName = "rank", OperatorProperty = "In", Values = [.. ExitCodes.Recreate] } },
            new() { Action = "FailJob", OnExitCodes = new V1PodFailurePolicyOnExitCodesRequirement { ContainerName = "rank", OperatorProperty = "In", Values = [ExitCodes.Refused] } },
        ];
        var (hostNetwork, dnsPolicy) = RdmaNetwork.Network(o);
        return new V1Job
        {
            ApiVersion = "batch/v1", Kind = "Job", Metadata = Meta(o, RanksName(o), "rank", o.Queue is null ? null : new() { [PodPlacement.QueueLabel] = o.Queue }),
            Spec = new V1JobSpec
            {
                CompletionMode = "Indexed", // JOB_COMPLETION_INDEX x ranks-per-pod + LOCAL_RANK = RANK
                Completions = o.Pods, Parallelism = o.Pods,
                Suspend = o.Queue is null ? null : true, // Kueue unsuspends it once the queue admits every pod
                TtlSecondsAfterFinished = o.TtlSecondsAfterFinished, ActiveDeadlineSeconds = o.ActiveDeadlineSeconds,
                // Other failures (exit 1, OOM kill) are counted: as many as the coordinator itself allows.
                BackoffLimit = maxRestarts,
                PodFailurePolicy = new V1PodFailurePolicy { Rules = rules },
                Template = new V1PodTemplateSpec
                {
                    Metadata = new V1ObjectMeta { Labels = labels },
                    Spec = new V1PodSpec
                    {
                        Subdomain = RanksName(o), RestartPolicy = "Never", // Never: required by podFailurePolicy
                        Containers = [container], SecurityContext = SecurityContext(), TerminationGracePeriodSeconds = RankGraceSeconds,
                        PriorityClassName = o.PriorityClass, ServiceAccountName = o.ServiceAccount, ImagePullSecrets = PodPlacement.ImagePullSecrets(o),
                        NodeSelector = PodPlacement.NodeSelector(o), Tolerations = PodPlacement.Tolerations(o),
                        Affinity = PodPlacement.Affinity(o, labels), TopologySpreadConstraints = PodPlacement.TopologySpread(o, labels),
                        HostNetwork = hostNetwork, DnsPolicy = dnsPolicy,
                        Volumes =
                        [
                            SharedVolume(o),
                            new V1Volume { Name = "dshm", EmptyDir = new V1EmptyDirVolumeSource { Medium = "Memory", SizeLimit = new($"{ManifestOptions.ShmGiPerRank * o.RanksPerPod}Gi") } },
                        ],
                    },
                },
            },
        };
    }

    /// <summary>The Prometheus operator's PodMonitor (a custom resource, not in the client's models): scrapes the
    /// coordinator's metrics port, keeping the job's own `job` label.</summary>
    static Dictionary<string, object> PodMonitor(ManifestOptions o)
    {
        var metadata = new Dictionary<string, object> { ["name"] = o.Name, ["labels"] = Labels(o, "coordinator") };
        if (o.Namespace is not null) metadata["namespace"] = o.Namespace;
        return new Dictionary<string, object>
        {
            ["apiVersion"] = "monitoring.coreos.com/v1",
            ["kind"] = "PodMonitor",
            ["metadata"] = metadata,
            ["spec"] = new Dictionary<string, object>
            {
                ["selector"] = new Dictionary<string, object> { ["matchLabels"] = Labels(o, "coordinator") },
                ["podMetricsEndpoints"] = new[] { new Dictionary<string, object> { ["port"] = "metrics", ["path"] = "/metrics", ["honorLabels"] = true } },
            },
        };
    }

    /// <summary>deploy/grafana/oec-dashboard.json (embedded in the program) for Grafana's dashboard sidecar, which loads
    /// every ConfigMap labelled grafana_dashboard: "1".</summary>
    static V1ConfigMap Dashboard(ManifestOptions o)
    {
        using var stream = typeof(JobManifests).Assembly.GetManifestResourceStream(DashboardKey)
                           ?? throw new InvalidOperationException($"the program lacks its embedded {DashboardKey}");
        using var reader = new StreamReader(stream);
        return new V1ConfigMap
        {
            ApiVersion = "v1", Kind = "ConfigMap",
            Metadata = Meta(o, $"{o.Name}-dashboard", "dashboard", new() { ["grafana_dashboard"] = "1" }),
            Data = new Dictionary<string, string> { [DashboardKey] = reader.ReadToEnd() },
        };
    }
}
