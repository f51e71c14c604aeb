// `oecrun k8s` and deploy/k8s: the rendered manifests, the checked-in base and the kustomize overlays (through a real
// kubectl), loaded into the official client's models and checked against the invariants a running job depends on.
using Job;
using System.Diagnostics;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Rank.Configuration;
using OecRun.Kubernetes;

namespace OecRun.UnitTests;

public class KubernetesTests
{
    static readonly string K8sDir = Path.Combine(TestPrograms.RepositoryRoot, "deploy", "k8s");
    static readonly string BaseDir = Path.Combine(K8sDir, "base");

    const string CpuName = "cpu-job", GpuName = "gpu-job";
    static readonly string[] CpuArgs = ["k8s", "--name", CpuName, "--image", "registry.example.com/oec:cpu", "--ranks", "4"];
    static readonly string[] GpuArgs =
    [
        "k8s", "--name", GpuName, "--image", "registry.example.com/oec:gpu", "--ranks", "8", "--ranks-per-pod", "4", "--gpus-per-rank", "1",
        "--port", "30000", "--metrics-port", "9500", "--token-secret", "team-token", "--pvc", "team-shared", "--namespace", "training",
        "--nccl-ib-disable", "--nccl-debug", "INFO",
    ];

    [Fact]
    public void A_cpu_job_of_4_ranks_renders_4_pods_of_one_rank_each_with_its_own_secret_and_claim()
    {
        var objects = Load(Render(CpuArgs));

        var job = Invariants(objects, gpusPerRank: 0);
        Assert.Equal(4, job.Spec.Completions);
        Assert.Equal(["rank", "--local-ranks", "1"], job.Spec.Template.Spec.Containers[0].Args);
        var secret = Assert.Single(objects.OfType<V1Secret>());
        Assert.Equal($"{CpuName}-token", secret.Metadata.Name);
        Assert.True(secret.StringData[JobManifests.TokenKey].Length >= 16);
        var claim = Assert.Single(objects.OfType<V1PersistentVolumeClaim>());
        Assert.Equal(["ReadWriteMany"], claim.Spec.AccessModes);
        Assert.Equal("tcp", EffectiveSetting(objects, "job", "backend"));
        Assert.DoesNotContain(job.Spec.Template.Spec.Containers[0].Env, e => e.Name.StartsWith("NCCL_", StringComparison.Ordinal));
        Assert.Null(job.Spec.Template.Spec.Tolerations);
    }

    [Fact]
    public void A_gpu_job_of_8_ranks_4_per_pod_renders_2_pods_with_4_gpus_nccl_and_the_given_names()
    {
        var objects = Load(Render(GpuArgs));

        var job = Invariants(objects, gpusPerRank: 1, tokenSecret: "team-token", claim: "team-shared");
        Assert.Equal(2, job.Spec.Completions);
        var rank = job.Spec.Template.Spec.Containers[0];
        Assert.Equal("4", rank.Resources.Limits["nvidia.com/gpu"].ToString());
        Assert.Equal("nccl", EffectiveSetting(objects, "job", "backend"));
        var env = rank.Env.ToDictionary(e => e.Name, e => e.Value);
        Assert.Equal("eth0", env["NCCL_SOCKET_IFNAME"]);
        Assert.Equal("1", env["NCCL_IB_DISABLE"]);
        Assert.Equal("INFO", env["NCCL_DEBUG"]);
        Assert.Contains(job.Spec.Template.Spec.Tolerations, t => t.Key == "nvidia.com/gpu" && t.Effect == "NoSchedule");
        Assert.Empty(objects.OfType<V1Secret>());
        Assert.Empty(objects.OfType<V1PersistentVolumeClaim>());
        Assert.All(objects, o => Assert.Equal("training", Metadata(o).NamespaceProperty));
        Assert.Equal("4Gi", Volume(job.Spec.Template.Spec, "/dev/shm", job.Spec.Template.Spec.Containers[0]).EmptyDir.SizeLimit.ToString());
    }

    [Fact]
    public void Every_rendering_makes_a_fresh_token()
    {
        string Token() => Assert.Single(Load(Render(CpuArgs)).OfType<V1Secret>()).StringData[JobManifests.TokenKey];

        Assert.NotEqual(Token(), Token());
    }

    [Fact]
    public void The_rendered_configuration_loads_as_the_coordinator_loads_it_with_the_renderers_settings()
    {
        using var temp = new TempDirectory();
        string config = temp.File("my-job.json");
        File.WriteAllText(config, """{ "train": { "steps": 50 }, "job": { "world_size": 2, "max_restarts": 7, "resume": false } }""");
        var objects = Load(Render([.. CpuArgs, "--config", config, "train.learning_rate=1e-3"]));
        File.WriteAllText(temp.File("job.json"), ConfigMap(objects).Data[JobManifests.ConfigKey]);

        var run = RunConfig.Load(temp.File("job.json"), []);

        Assert.Equal((50, 1e-3), (run.Train.Steps, run.Train.LearningRate));
        Assert.Equal((4, CpuName, true, Job.Backend.Tcp), (run.Job.WorldSize, run.Job.Id, run.Job.Resume, run.Job.Backend));
        Assert.Equal($"/shared/runs/{CpuName}", run.Run.OutDir);
        Assert.Equal(7, Assert.Single(objects.OfType<V1Job>()).Spec.BackoffLimit);
    }

    [Fact]
    public void The_dashboard_configmap_holds_the_repositorys_dashboard_for_grafanas_sidecar()
    {
        var dashboard = Assert.Single(Load(Render(CpuArgs)).OfType<V1ConfigMap>(), c => c.Metadata.Name == $"{CpuName}-dashboard");

        Assert.Equal("1", dashboard.Metadata.Labels["grafana_dashboard"]);
        string expected = File.ReadAllText(Path.Combine(TestPrograms.RepositoryRoot, "deploy", "grafana", "oec-dashboard.json"));
        Assert.Equal(expected, dashboard.Data[JobManifests.DashboardKey]);
    }

    [Theory]
    [InlineData("--ranks = 6: not divisible by --ranks-per-pod = 4", "--name", "job", "--ranks", "6", "--ranks-per-pod", "4")]
    [InlineData("--name = 'Bad_Name'", "--name", "Bad_Name", "--ranks", "4")]
    [InlineData("--name = '9lives'", "--name", "9lives", "--ranks", "4")]
    [InlineData("--memory = 'lots'", "--name", "job", "--ranks", "4", "--memory", "lots")]
    [InlineData("--gpus-per-rank = 2: must be 0 (a CPU job) or 1", "--name", "job", "--ranks", "4", "--gpus-per-rank", "2")]
    [InlineData("--nccl-debug = 'LOUD'", "--name", "job", "--ranks", "4", "--gpus-per-rank", "1", "--nccl-debug", "LOUD")]
    [InlineData("train.batch_size = 16: must be divisible by the data-parallel size 32", "--name", "job", "--ranks", "32")]
    [InlineData("unknown setting 'train.bogus' = 1", "--name", "job", "--ranks", "4", "train.bogus=1")]
    [InlineData("data.train_shards = 'data/x_*.bin': must be under /shared/", "--name", "job", "--ranks", "4",
        "data.source=shards", "data.train_shards=data/x_*.bin", "data.val_shards=/shared/data/v_*.bin")]
    public void Bad_arguments_fail_with_exit_code_2_naming_the_option_and_value(string expected, params string[] args)
    {
        var (code, output, error) = Invoke(["k8s", "--image", "img", .. args]);

        Assert.Equal(2, code);
        Assert.Contains(expected, error);
        Assert.Equal("", output);
    }

    [Fact]
    public void A_bad_key_in_the_config_file_fails_at_render_time_naming_the_key_and_value()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("bad.json"), """{ "oec": { "method": "centre" } }""");

        var (code, _, error) = Invoke([.. CpuArgs, "--config", temp.File("bad.json")]);

        Assert.Equal(2, code);
        Assert.Contains("oec.method", error);
        Assert.Contains("\"centre\"", error);
    }

    [Fact]
    public void The_out_directory_holds_one_file_per_object_listed_by_its_kustomization_and_replaces_only_a_rendering()
    {
        using var temp = new TempDirectory();
        string dir = temp.File("job");

        Assert.Equal(0, Invoke([.. CpuArgs, "--out", dir]).ExitCode);
        string firstToken = Assert.Single(LoadDirectory(dir).OfType<V1Secret>()).StringData[JobManifests.TokenKey];
        Assert.Equal(0, Invoke([.. CpuArgs, "--out", dir]).ExitCode); // an earlier rendering is replaced whole

        var files = FileNames(dir);
        Assert.Equal([.. Kustomization(dir).Append("kustomization.yaml").Order(StringComparer.Ordinal)], files);
        Assert.Equal([dir], Directory.GetDirectories(temp.Path)); // no staging or old directory left behind
        Assert.NotEqual(firstToken, Assert.Single(LoadDirectory(dir).OfType<V1Secret>()).StringData[JobManifests.TokenKey]);
        Assert.Equal(string.Join(' ', CpuArgs[1..]), RecordedArguments(dir));

        string other = temp.File("other");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "notes.txt"), "mine");
        var (code, _, error) = Invoke([.. CpuArgs, "--out", other]);
        Assert.Equal(2, code);
        Assert.Contains($"--out = '{other}'", error);
        Assert.Equal(["notes.txt"], FileNames(other));
    }

    [Fact]
    public void The_checked_in_base_is_what_the_command_renders_for_its_recorded_arguments()
    {
        string recorded = RecordedArguments(BaseDir);
        Assert.DoesNotContain('\'', recorded); // deploy/k8s/render-base.sh splits the line on spaces
        var args = recorded.Split(' ');
        int config = Array.IndexOf(args, "--config");
        if (config >= 0) args[config + 1] = Path.Combine(TestPrograms.RepositoryRoot, args[config + 1]); // recorded relative to the root
        using var temp = new TempDirectory();
        string dir = temp.File("base");

        var (code, _, error) = Invoke(["k8s", .. args, "--out", dir]);

        Assert.True(code == 0, error);
        var expected = FileNames(BaseDir);
        Assert.Equal(expected, FileNames(dir));
        foreach (string file in expected.Where(f => f != "kustomization.yaml"))
            Assert.True(File.ReadAllText(Path.Combine(BaseDir, file)) == File.ReadAllText(Path.Combine(dir, file)),
                $"deploy/k8s/base/{file} differs from what `oecrun k8s {recorded}` renders: run deploy/k8s/render-base.sh");
    }

    [Fact]
    public void The_checked_in_base_keeps_the_invariants()
    {
        var objects = LoadDirectory(BaseDir);

        var job = Invariants(objects, gpusPerRank: 0, tokenSecret: "oec-example-token");
        Assert.Equal([.. FileNames(BaseDir).Where(f => f != "kustomization.yaml")],
            Kustomization(BaseDir).Order(StringComparer.Ordinal));
        Assert.Equal(4, job.Spec.Completions);
    }

    [Fact]
    public void The_cpu_overlay_renders_with_kubectl_kustomize_and_keeps_the_invariants()
    {
        var objects = Load(Kustomize("overlays/cpu"));

        var job = Invariants(objects, gpusPerRank: 0, tokenSecret: "oec-example-token");
        var rank = job.Spec.Template.Spec.Containers[0];
        Assert.Equal("registry.example.com/oec:cpu", rank.Image);
        Assert.Equal("8", rank.Resources.Limits["cpu"].ToString());
        Assert.Equal("tcp", EffectiveSetting(objects, "job", "backend"));
    }

    [Fact]
    public void The_gpu_overlay_renders_with_kubectl_kustomize_with_one_gpu_per_rank_and_nccl()
    {
        var objects = Load(Kustomize("overlays/gpu"));

        var job = Invariants(objects, gpusPerRank: 1, tokenSecret: "oec-example-token");
        var rank = job.Spec.Template.Spec.Containers[0];
        Assert.Equal("registry.example.com/oec:gpu", rank.Image);
        Assert.Equal("nccl", EffectiveSetting(objects, "job", "backend"));
        Assert.Equal("cuda", EffectiveSetting(objects, "train", "device"));
        Assert.Equal(["NCCL_DEBUG", "NCCL_IB_DISABLE", "NCCL_SOCKET_IFNAME"], rank.Env.Select(e => e.Name).Where(n => n.StartsWith("NCCL_", StringComparison.Ordinal)).Order());
        Assert.Contains(job.Spec.Template.Spec.Tolerations, t => t.Key == "nvidia.com/gpu");
        Assert.Contains("podFailurePolicy", Kustomize("overlays/gpu")); // fields newer than an old kustomize's schema survive its patches
    }

    /// <summary>
    /// The invariants of a job's objects, whatever rendered them: rank pods = parallelism = completions; world size =
    /// pods x ranks per pod in the env and in job.json; GPUs = per rank x ranks per pod; the token from a Secret that exists
    /// (or was named); the coordinator's Service, args, probes and OEC_COORDINATOR agree on the ports; the PodMonitor
    /// selects the coordinator and scrapes its metrics port; images and resources everywhere; /dev/shm in memory; the
    /// failure policy agrees with the coordinator's recovery. Returns the rank Job.
    /// </summary>
    static V1Job Invariants(List<object> objects, int gpusPerRank, string? tokenSecret = null, string? claim = null)
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
        foreach (var (name, port) in new[] { ("grpc", grpcPort), ("metrics", metricsPort) })
        {
            var servicePort = Assert.Single(service.Spec.Ports, p => p.Name == name);
            Assert.Equal(port, servicePort.Port);
            Assert.Equal(port, Assert.Single(coordinator.Ports, p => p.Name == servicePort.TargetPort.Value).ContainerPort);
        }
        Assert.Equal($"http://{service.Metadata.Name}:{grpcPort}", Env(rank, "OEC_COORDINATOR").Value);
        foreach (var probe in new[] { coordinator.ReadinessProbe, coordinator.LivenessProbe })
            Assert.Equal(grpcPort, probe.Grpc.Port);
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
        Assert.Equal(EffectiveSetting(objects, "job", "max_restarts"), $"{job.Spec.BackoffLimit}");

        // Common labels on every object.
        string instance = Metadata(job).Labels["app.kubernetes.io/instance"];
        Assert.All(objects, o => Assert.Equal(("oec", instance), (Metadata(o).Labels["app.kubernetes.io/name"], Metadata(o).Labels["app.kubernetes.io/instance"])));
        return job;
    }

    /// <summary>A setting the coordinator runs with: job.json, then any section.key=value after it on the command line.</summary>
    static string EffectiveSetting(List<object> objects, string section, string key)
    {
        var coordinator = Assert.Single(objects.OfType<V1Deployment>()).Spec.Template.Spec.Containers[0];
        string? overridden = coordinator.Args.LastOrDefault(a => a.StartsWith($"{section}.{key}=", StringComparison.Ordinal));
        if (overridden is not null) return overridden[(overridden.IndexOf('=') + 1)..];
        var value = JsonNode.Parse(ConfigMap(objects).Data[JobManifests.ConfigKey])![section]![key]!;
        return value.ToJsonString().Trim('"');
    }

    static V1ConfigMap ConfigMap(List<object> objects) =>
        Assert.Single(objects.OfType<V1ConfigMap>(), c => c.Data.ContainsKey(JobManifests.ConfigKey));

    static V1ObjectMeta Metadata(object o) => o is IMetadata<V1ObjectMeta> m ? m.Metadata
        : KubernetesYaml.Deserialize<V1ObjectMeta>(KubernetesYaml.Serialize(((Dictionary<object, object>)o)["metadata"]));

    static V1EnvVar Env(V1Container container, string name) => Assert.Single(container.Env, e => e.Name == name);

    /// <summary>The pod's volume mounted at `path` in `container`.</summary>
    static V1Volume Volume(V1PodSpec pod, string path, V1Container container)
    {
        var mount = Assert.Single(container.VolumeMounts, m => m.MountPath == path);
        return Assert.Single(pod.Volumes, v => v.Name == mount.Name);
    }

    /// <summary>The names of the files in `dir`, sorted.</summary>
    static string[] FileNames(string dir) => [.. Directory.GetFiles(dir).Select(f => Path.GetFileName(f)!).Order(StringComparer.Ordinal)];

    static string ArgAfter(IList<string> args, string option)
    {
        int at = args.IndexOf(option);
        Assert.True(at >= 0 && at + 1 < args.Count, $"no {option} VALUE in [{string.Join(' ', args)}]");
        return args[at + 1];
    }

    static bool Selects(IDictionary<string, string> selector, IDictionary<string, string> labels) =>
        selector.Count > 0 && selector.All(kv => labels.TryGetValue(kv.Key, out var v) && v == kv.Value);

    /// <summary>A YAML stream into the client's typed models (strict: an unknown or misspelled field fails); the
    /// PodMonitor, a custom resource, into a plain dictionary.</summary>
    static List<object> Load(string yaml) =>
        KubernetesYaml.LoadAllFromString(yaml, new Dictionary<string, Type> { ["monitoring.coreos.com/v1/PodMonitor"] = typeof(Dictionary<object, object>) }, strict: true);

    static List<object> LoadDirectory(string dir) =>
        [.. Kustomization(dir).SelectMany(file => Load(File.ReadAllText(Path.Combine(dir, file))))];

    static List<string> Kustomization(string dir)
    {
        var kustomization = KubernetesYaml.Deserialize<Dictionary<string, object>>(File.ReadAllText(Path.Combine(dir, "kustomization.yaml")));
        return [.. ((List<object>)kustomization["resources"]).Cast<string>()];
    }

    static string RecordedArguments(string dir)
    {
        var lines = File.ReadLines(Path.Combine(dir, "kustomization.yaml")).Take(2).ToArray();
        Assert.Equal(ManifestFiles.Header, lines[0]);
        Assert.StartsWith(ManifestFiles.CommandPrefix, lines[1]);
        return lines[1][ManifestFiles.CommandPrefix.Length..];
    }

    /// <summary>`kubectl kustomize deploy/k8s/{overlay}`: its stdout (deprecation notices go to stderr).</summary>
    static string Kustomize(string overlay)
    {
        var info = new ProcessStartInfo(TestPrograms.Require("kubectl"), ["kustomize", Path.Combine(K8sDir, overlay)])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var kubectl = Process.Start(info)!;
        var output = kubectl.StandardOutput.ReadToEndAsync();
        var errors = kubectl.StandardError.ReadToEndAsync();
        Assert.True(kubectl.WaitForExit(TimeSpan.FromMinutes(1)), $"kubectl kustomize {overlay} did not finish within a minute");
        Assert.True(kubectl.ExitCode == 0, $"kubectl kustomize {overlay} exited with {kubectl.ExitCode}: {errors.Result}");
        return output.Result;
    }

    static string Render(string[] args)
    {
        var (code, output, error) = Invoke(args);
        Assert.True(code == 0, $"oecrun {string.Join(' ', args)} exited with {code}: {error}");
        return output;
    }

    /// <summary>Runs the command line with Console.Out and Console.Error captured.</summary>
    static (int ExitCode, string Out, string Error) Invoke(string[] args)
    {
        var (oldOut, oldError) = (Console.Out, Console.Error);
        var (output, error) = (new StringWriter(), new StringWriter());
        Console.SetOut(output);
        Console.SetError(error);
        try
        {
            return (Program.Root().Parse(args).Invoke(), output.ToString(), error.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldError);
        }
    }
}
