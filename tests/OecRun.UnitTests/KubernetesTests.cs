// `oecrun k8s` and deploy/k8s: the rendered manifests and the checked-in base, loaded into the official client's models
// and checked against the invariants a running job depends on; the overlays through a real kubectl are in
// OecRun.FunctionalTests.
using Job;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Rank.Configuration;
using OecRun.Kubernetes;
using static OecRun.UnitTests.CommandLineRun;
using static OecRun.UnitTests.KubernetesObjects;

namespace OecRun.UnitTests;

public class KubernetesTests
{
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
        Assert.Equal("4", job.Spec.Template.Spec.Containers[0].Resources.Limits["cpu"].ToString());
        Assert.Equal("16Gi", job.Spec.Template.Spec.Containers[0].Resources.Limits["memory"].ToString());
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
        // 4 ranks: 4 x (4 CPU, 16Gi) by default, requests = limits
        Assert.Equal("16", rank.Resources.Limits["cpu"].ToString());
        Assert.Equal("64Gi", rank.Resources.Limits["memory"].ToString());
        Assert.Equal(rank.Resources.Limits["memory"].ToString(), rank.Resources.Requests["memory"].ToString());
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
        Assert.Equal((4, CpuName, Job.ResumeMode.Auto, Job.Backend.Tcp), (run.Job.WorldSize, run.Job.Id, run.Job.Resume, run.Job.Backend));
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
    [InlineData("--memory = '4Gi': a rank pod's memory must exceed its /dev/shm, 1Gi per rank (4Gi for --ranks-per-pod = 4)", "--name", "job", "--ranks", "8",
        "--ranks-per-pod", "4", "--memory", "4Gi")]
    [InlineData("--cpu = '0'", "--name", "job", "--ranks", "4", "--cpu", "0")]
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
    public void Given_cpu_and_memory_are_the_whole_pods_whatever_its_ranks()
    {
        var rank = Invariants(Load(Render([.. GpuArgs, "--cpu", "48", "--memory", "200Gi"])), gpusPerRank: 1, tokenSecret: "team-token", claim: "team-shared")
            .Spec.Template.Spec.Containers[0];

        Assert.Equal("48", rank.Resources.Requests["cpu"].ToString());
        Assert.Equal("200Gi", rank.Resources.Limits["memory"].ToString());
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

    [Fact, System.Runtime.Versioning.SupportedOSPlatform("linux")] // Unix file modes
    public void The_token_Secret_is_written_readable_by_its_owner_only_and_the_other_objects_by_all()
    {
        using var temp = new TempDirectory();
        string dir = temp.File("job");
        Assert.Equal(0, Invoke([.. CpuArgs, "--out", dir]).ExitCode);

        const UnixFileMode ownerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        Assert.Equal(ownerOnly, File.GetUnixFileMode(Path.Combine(dir, "token-secret.yaml")));
        Assert.All(FileNames(dir).Where(f => f != "token-secret.yaml"),
            f => Assert.True(File.GetUnixFileMode(Path.Combine(dir, f)).HasFlag(UnixFileMode.OtherRead), f));
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

    static string Render(string[] args)
    {
        var (code, output, error) = Invoke(args);
        Assert.True(code == 0, $"oecrun {string.Join(' ', args)} exited with {code}: {error}");
        return output;
    }
}
