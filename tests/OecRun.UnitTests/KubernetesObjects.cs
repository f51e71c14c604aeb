// Kubernetes objects of a rendering for the tests: YAML loaded into the official client's models, the kustomization's
// files, and the invariants a running job depends on, checked whatever rendered the objects.
using Job;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Rank.Configuration;
using OecRun.Kubernetes;

namespace OecRun.UnitTests;

internal static class KubernetesObjects
{
    public static readonly string K8sDir = Path.Combine(TestPrograms.RepositoryRoot, "deploy", "k8s");
    public static readonly string BaseDir = Path.Combine(K8sDir, "base");

    /// <summary>
    /// The invariants of a job's objects, whatever rendered them: rank pods = parallelism = completions; world size =
    /// pods x ranks per pod in the env and in job.json; GPUs = per rank x ranks per pod; the token from a Secret that exists
    /// (or was named); the coordinator's Service, args, probes and OEC_COORDINATOR agree on the ports; the PodMonitor
    /// selects the coordinator and scrapes its metrics port; images and resources everywhere; /dev/shm in memory; the
    /// failure policy agrees with the coordinator's recovery. Returns the rank Job.
    /// </summary>
    public static V1Job Invariants(List<object> objects, int gpusPerRank, string? tokenSecret = null, string? claim = null)
    {
        var job = Assert.Single(objects.OfType<V1Job>());
        var deployment = Assert.Single(objects.OfType<V1Deployment>());
        var rankPod = job.Spec.Template.Spec;
        var rank = Assert.Single(rankPod.Containers);
        var coordinator = Assert.Single(deployment.Spec.Template.Spec.Containers);

        // Ranks: pods, world size, GPUs.
        Assert.Equal("Indexed", job.Spec.CompletionMode);
        Assert.Equal(job.Spec.Completions, job.Spec.Parallelism);
        int localRanks = int.Parse(ArgAfter(rank.Args, "--local-ranks"));
        int worldSize = job.Spec.Completions!.Value * localRanks;
        Assert.Equal($"{worldSize}", Env(rank, "WORLD_SIZE").Value);
        Assert.Equal($"{worldSize}", EffectiveSetting(objects, "job", "world_size"));
        Assert.Equal("status.podIP", Env(rank, "OEC_RANK_HOST").ValueFrom.FieldRef.FieldPath);
        Assert.Equal(EffectiveSetting(objects, "job", "id"), Env(rank, "OEC_JOB_ID").Value);
        int gpus = rank.Resources.Limits.TryGetValue("nvidia.com/gpu", out var limit) ? int.Parse(limit.ToString()) : 0;
        Assert.Equal(gpusPerRank * localRanks, gpus);
        Assert.Equal(gpus > 0 ? "nccl" : "tcp", EffectiveSetting(objects, "job", "backend"));
        Assert.Equal(gpus > 0 ? "cuda" : "cpu", EffectiveSetting(objects, "train", "device"));

        // The token: the same Secret key for both, from a Secret among the objects or the one named.
        foreach (var container in new[] { rank, coordinator })
        {
            var secretRef = Env(container, "OEC_JOB_TOKEN").ValueFrom.SecretKeyRef;
            if (tokenSecret is not null) Assert.Equal(tokenSecret, secretRef.Name);
            else Assert.True(Assert.Single(objects.OfType<V1Secret>(), s => s.Metadata.Name == secretRef.Name).StringData.ContainsKey(secretRef.Key));
        }

        // The coordinator: one pod at a time, its ports, probes and Service, and the ranks' address of it.
        Assert.Equal((1, "Recreate"), (deployment.Spec.Replicas, deployment.Spec.Strategy.Type));
        int grpcPort = int.Parse(ArgAfter(coordinator.Args, "--port"));
        int metricsPort = int.Parse(ArgAfter(coordinator.Args, "--metrics-port"));
        var service = Assert.Single(objects.OfType<V1Service>(), s => s.Spec.ClusterIP != "None");
        Assert.True(Selects(service.Spec.Selector, deployment.Spec.Template.Metadata.Labels), "the coordinator Service selects the coordinator pod");
        // reachable also when not ready (its job failed): a late rank pod hears "job over" and exits 2 instead of 5 for ever
        Assert.True(service.Spec.PublishNotReadyAddresses);
        foreach (var (name, port) in new[] { ("grpc", grpcPort), ("metrics", metricsPort) })
        {
            var servicePort = Assert.Single(service.Spec.Ports, p => p.Name == name);
            Assert.Equal(port, servicePort.Port);
            Assert.Equal(port, Assert.Single(coordinator.Ports, p => p.Name == servicePort.TargetPort.Value).ContainerPort);
        }
        Assert.Equal($"http://{service.Metadata.Name}:{grpcPort}", Env(rank, "OEC_COORDINATOR").Value);
        Assert.Equal((service.Metadata.Name, $"{grpcPort}"), (Env(rank, "MASTER_ADDR").Value, Env(rank, "MASTER_PORT").Value)); // torchrun's names
        foreach (var probe in new[] { coordinator.ReadinessProbe, coordinator.LivenessProbe })
            Assert.Equal(grpcPort, probe.Grpc.Port);
        Assert.Null(coordinator.ReadinessProbe.Grpc.Service);                                         // the job's state
        Assert.Equal(Coordinator.CoordinatorHost.LivenessService, coordinator.LivenessProbe.Grpc.Service); // the process's
        Assert.Contains("--linger", coordinator.Args);
        string configPath = ArgAfter(coordinator.Args, "--config");
        var configVolume = Volume(deployment.Spec.Template.Spec, Path.GetDirectoryName(configPath)!, coordinator);
        Assert.Equal(ConfigMap(objects).Metadata.Name, configVolume.ConfigMap.Name);
        Assert.True(ConfigMap(objects).Data.ContainsKey(Path.GetFileName(configPath)));

        // The ranks' headless Service gives the pods their DNS names.
        var headless = Assert.Single(objects.OfType<V1Service>(), s => s.Spec.ClusterIP == "None");
        Assert.Equal(headless.Metadata.Name, rankPod.Subdomain);
        Assert.True(Selects(headless.Spec.Selector, job.Spec.Template.Metadata.Labels), "the headless Service selects the rank pods");

        // The PodMonitor scrapes the coordinator's metrics port by name, keeping the job's own `job` label.
        var monitor = Assert.Single(objects.OfType<Dictionary<object, object>>(), d => (string)d["kind"] == "PodMonitor");
        var spec = (Dictionary<object, object>)monitor["spec"];
        var matchLabels = ((Dictionary<object, object>)((Dictionary<object, object>)spec["selector"])["matchLabels"])
            .ToDictionary(kv => (string)kv.Key, kv => (string)kv.Value);
        Assert.True(Selects(matchLabels, deployment.Spec.Template.Metadata.Labels), "the PodMonitor selects the coordinator pod");
        Assert.False(Selects(matchLabels, job.Spec.Template.Metadata.Labels), "the PodMonitor selects no rank pod");
        var endpoint = (Dictionary<object, object>)Assert.Single((List<object>)spec["podMetricsEndpoints"]);
        Assert.Equal(metricsPort, Assert.Single(coordinator.Ports, p => p.Name == (string)endpoint["port"]).ContainerPort);
        Assert.Equal(("/metrics", "true"), ((string)endpoint["path"], endpoint["honorLabels"].ToString()!.ToLowerInvariant()));

        // Every container: an image, CPU and memory requested, memory limited; the shared volume at /shared from a RWX claim.
        foreach (var (pod, container) in new[] { (rankPod, rank), (deployment.Spec.Template.Spec, coordinator) })
        {
            Assert.False(string.IsNullOrWhiteSpace(container.Image));
            Assert.True(container.Resources.Requests.ContainsKey("cpu") && container.Resources.Requests.ContainsKey("memory"), $"{container.Name} requests cpu and memory");
            Assert.True(container.Resources.Limits.ContainsKey("memory"), $"{container.Name} has a memory limit");
            string claimName = Volume(pod, JobManifests.SharedMount, container).PersistentVolumeClaim.ClaimName;
            if (claim is not null) Assert.Equal(claim, claimName);
            else Assert.Equal(["ReadWriteMany"], Assert.Single(objects.OfType<V1PersistentVolumeClaim>(), c => c.Metadata.Name == claimName).Spec.AccessModes);
        }
        Assert.Equal("Memory", Volume(rankPod, "/dev/shm", rank).EmptyDir.Medium);

        // Failures: the coordinator's own recovery (4, 5, disruptions) is not counted; a refusal (2) ends the Job; other
        // failures count against the coordinator's own limit.
        Assert.Equal("Never", rankPod.RestartPolicy);
        var rules = job.Spec.PodFailurePolicy.Rules;
        Assert.Equal([4, 5], Assert.Single(rules, r => r.Action == "Ignore" && r.OnExitCodes is not null).OnExitCodes.Values.Order());
        Assert.Equal([2], Assert.Single(rules, r => r.Action == "FailJob").OnExitCodes.Values);
        Assert.All(rules.Where(r => r.OnExitCodes is not null), r => Assert.Equal(("rank", "In"), (r.OnExitCodes.ContainerName, r.OnExitCodes.OperatorProperty)));
        Assert.Contains(rules, r => r.Action == "Ignore" && r.OnPodConditions?.Any(c => c.Type == "DisruptionTarget") == true);
        Assert.Equal(600, rankPod.TerminationGracePeriodSeconds); // a disrupted pod's ranks write their stop checkpoint first
        Assert.Equal(EffectiveSetting(objects, "job", "max_restarts"), $"{job.Spec.BackoffLimit}");

        // Common labels on every object.
        string instance = Metadata(job).Labels["app.kubernetes.io/instance"];
        Assert.All(objects, o => Assert.Equal(("oec", instance), (Metadata(o).Labels["app.kubernetes.io/name"], Metadata(o).Labels["app.kubernetes.io/instance"])));
        return job;
    }

    /// <summary>A setting the coordinator runs with: job.json, then any section.key=value after it on the command line.</summary>
    public static string EffectiveSetting(List<object> objects, string section, string key)
    {
        var coordinator = Assert.Single(objects.OfType<V1Deployment>()).Spec.Template.Spec.Containers[0];
        string? overridden = coordinator.Args.LastOrDefault(a => a.StartsWith($"{section}.{key}=", StringComparison.Ordinal));
        if (overridden is not null) return overridden[(overridden.IndexOf('=') + 1)..];
        var value = JsonNode.Parse(ConfigMap(objects).Data[JobManifests.ConfigKey])![section]![key]!;
        return value.ToJsonString().Trim('"');
    }

    public static V1ConfigMap ConfigMap(List<object> objects) =>
        Assert.Single(objects.OfType<V1ConfigMap>(), c => c.Data.ContainsKey(JobManifests.ConfigKey));

    public static V1ObjectMeta Metadata(object o) => o is IMetadata<V1ObjectMeta> m ? m.Metadata
        : KubernetesYaml.Deserialize<V1ObjectMeta>(KubernetesYaml.Serialize(((Dictionary<object, object>)o)["metadata"]));

    /// <summary>`oecrun k8s` with these arguments exits with 2, says `expected` and renders nothing.</summary>
    public static void AssertRefused(string expected, params string[] args)
    {
        var (code, output, error) = CommandLineRun.Invoke(args);
        Assert.Equal(2, code);
        Assert.Contains(expected, error);
        Assert.Equal("", output);
    }

    public static V1EnvVar Env(V1Container container, string name) => Assert.Single(container.Env, e => e.Name == name);

    /// <summary>The pod's volume mounted at `path` in `container`.</summary>
    public static V1Volume Volume(V1PodSpec pod, string path, V1Container container)
    {
        var mount = Assert.Single(container.VolumeMounts, m => m.MountPath == path);
        return Assert.Single(pod.Volumes, v => v.Name == mount.Name);
    }

    /// <summary>The names of the files in `dir`, sorted.</summary>
    public static string[] FileNames(string dir) => [.. Directory.GetFiles(dir).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal)];

    public static string ArgAfter(IList<string> args, string option)
    {
        int at = args.IndexOf(option);
        Assert.True(at >= 0 && at + 1 < args.Count, $"no {option} VALUE in [{string.Join(' ', args)}]");
        return args[at + 1];
    }

    public static bool Selects(IDictionary<string, string> selector, IDictionary<string, string> labels) =>
        selector.Count > 0 && selector.All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value);

    /// <summary>A YAML stream into the client's typed models (strict: an unknown or misspelled field fails); the
    /// PodMonitor, a custom resource, into a plain dictionary.</summary>
    public static List<object> Load(string yaml) =>
        KubernetesYaml.LoadAllFromString(yaml, new Dictionary<string, Type> { ["monitoring.coreos.com/v1/PodMonitor"] = typeof(Dictionary<object, object>) }, strict: true);

    public static List<object> LoadDirectory(string dir) =>
        [.. Kustomization(dir).SelectMany(file => Load(File.ReadAllText(Path.Combine(dir, file))))];

    public static List<string> Kustomization(string dir)
    {
        var kustomization = KubernetesYaml.Deserialize<Dictionary<string, object>>(File.ReadAllText(Path.Combine(dir, "kustomization.yaml")));
        return [.. ((List<object>)kustomization["resources"]).Cast<string>()];
    }

    public static string RecordedArguments(string dir)
    {
        var lines = File.ReadLines(Path.Combine(dir, "kustomization.yaml")).Take(2).ToArray();
        Assert.Equal(ManifestFiles.Header, lines[0]);
        Assert.StartsWith(ManifestFiles.CommandPrefix, lines[1]);
        return lines[1][ManifestFiles.CommandPrefix.Length..];
    }
}
