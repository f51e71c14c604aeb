// `oecrun k8s`'s scheduling options in the rendered objects (strictly loaded into the client's models): Kueue's queue,
// priority, node selection, tolerations, one pod per node or spread, service account, pull secrets, the Job's time
// limits, and torchrun's variables in the rank pods.
using k8s.Models;
using OecRun.Kubernetes;
using Rank.Distributed;
using static OecRun.UnitTests.CommandLineRun;
using static OecRun.UnitTests.KubernetesObjects;

namespace OecRun.UnitTests;

public class KubernetesSchedulingTests
{
    static readonly string[] Cpu = ["k8s", "--name", "job", "--image", "img", "--ranks", "4"];
    static readonly string[] Gpu = ["k8s", "--name", "job", "--image", "img", "--ranks", "16", "--ranks-per-pod", "8", "--gpus-per-rank", "1"];

    static List<object> Objects(params string[] args)
    {
        var (code, output, error) = Invoke(args);
        Assert.True(code == 0, error);
        var objects = Load(output);
        Invariants(objects, gpusPerRank: args.Contains("--gpus-per-rank") ? 1 : 0);
        return objects;
    }

    static V1Job RankJob(List<object> objects) => Assert.Single(objects.OfType<V1Job>());
    static V1PodSpec RankPod(List<object> objects) => RankJob(objects).Spec.Template.Spec;
    static V1PodSpec CoordinatorPod(List<object> objects) => Assert.Single(objects.OfType<V1Deployment>()).Spec.Template.Spec;

    [Fact]
    public void A_queue_labels_the_rank_Job_for_Kueue_and_creates_it_suspended()
    {
        var job = RankJob(Objects([.. Gpu, "--queue", "team-a"]));

        Assert.Equal("team-a", job.Metadata.Labels[PodPlacement.QueueLabel]);
        Assert.True(job.Spec.Suspend);
    }

    [Fact]
    public void A_queued_Job_s_coordinator_waits_a_day_for_the_first_rank_unless_told_otherwise()
    {
        Assert.Equal("86400", EffectiveSetting(Objects([.. Gpu, "--queue", "team-a"]), "job", "startup_timeout_s"));
        Assert.Equal("3600", EffectiveSetting(Objects([.. Gpu, "--queue", "team-a", "job.startup_timeout_s=3600"]), "job", "startup_timeout_s"));
        Assert.Equal("0", EffectiveSetting(Objects(Gpu), "job", "startup_timeout_s"));   // no queue: job.rendezvous_timeout_s
    }

    [Fact]
    public void Without_a_queue_the_Job_starts_at_once_and_carries_no_queue_label()
    {
        var objects = Objects(Cpu);

        Assert.Null(RankJob(objects).Spec.Suspend);
        Assert.All(objects, o => Assert.False(Metadata(o).Labels.ContainsKey(PodPlacement.QueueLabel)));
    }

    [Fact]
    public void Priority_service_account_and_pull_secrets_go_to_the_coordinator_and_rank_pods_alike()
    {
        var objects = Objects([.. Cpu, "--priority-class", "training-high", "--service-account", "trainer", "--image-pull-secret", "regcred", "--image-pull-secret", "mirror"]);

        foreach (var pod in new[] { RankPod(objects), CoordinatorPod(objects) })
        {
            Assert.Equal(("training-high", "trainer"), (pod.PriorityClassName, pod.ServiceAccountName));
            Assert.Equal(["regcred", "mirror"], pod.ImagePullSecrets.Select(s => s.Name));
        }
    }

    [Fact]
    public void Node_selectors_and_tolerations_go_to_the_rank_pods_after_the_gpu_toleration()
    {
        var pod = RankPod(Objects([.. Gpu, "--node-selector", "nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3", "--node-selector", "pool=train",
                                   "--toleration", "dedicated=training:NoSchedule", "--toleration", "spot", "--toleration", "maintenance:NoExecute"]));

        Assert.Equal(new Dictionary<string, string> { ["nvidia.com/gpu.product"] = "NVIDIA-H100-80GB-HBM3", ["pool"] = "train" }, pod.NodeSelector);
        Assert.Equal(
            [("nvidia.com/gpu", "Exists", null, "NoSchedule"), ("dedicated", "Equal", "training", "NoSchedule"), ("spot", "Exists", null, null), ("maintenance", "Exists", null, "NoExecute")],
            pod.Tolerations.Select(t => (t.Key, t.OperatorProperty, (string?)t.Value, (string?)t.Effect)));
    }

    [Fact]
    public void A_gpu_job_puts_at_most_one_rank_pod_on_a_node()
    {
        var objects = Objects(Gpu);
        var pod = RankJob(objects).Spec.Template;

        var term = Assert.Single(pod.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution);
        Assert.Equal(PodPlacement.HostnameKey, term.TopologyKey);
        Assert.True(Selects(term.LabelSelector.MatchLabels, pod.Metadata.Labels), "the anti-affinity selects the rank pods");
        Assert.False(Selects(term.LabelSelector.MatchLabels, Assert.Single(objects.OfType<V1Deployment>()).Spec.Template.Metadata.Labels), "and not the coordinator");
        Assert.Null(pod.Spec.TopologySpreadConstraints);
    }

    [Fact]
    public void A_cpu_job_spreads_its_rank_pods_over_nodes_without_waiting_for_a_free_one()
    {
        var pod = RankJob(Objects(Cpu)).Spec.Template;

        var spread = Assert.Single(pod.Spec.TopologySpreadConstraints);
        Assert.Equal((1, PodPlacement.HostnameKey, "ScheduleAnyway"), (spread.MaxSkew, spread.TopologyKey, spread.WhenUnsatisfiable));
        Assert.True(Selects(spread.LabelSelector.MatchLabels, pod.Metadata.Labels));
        Assert.Null(pod.Spec.Affinity);
    }

    [Theory]
    [InlineData("none", false, false)]
    [InlineData("node", true, false)]
    [InlineData("soft", false, true)]
    public void Pod_spread_chooses_the_placement_whatever_the_device(string spread, bool antiAffinity, bool topologySpread)
    {
        foreach (var args in new[] { Cpu, Gpu })
        {
            var pod = RankPod(Objects([.. args, "--pod-spread", spread]));

            Assert.Equal(antiAffinity, pod.Affinity is not null);
            Assert.Equal(topologySpread, pod.TopologySpreadConstraints is not null);
        }
    }

    [Fact]
    public void The_time_limits_go_to_the_rank_Job()
    {
        var job = RankJob(Objects([.. Cpu, "--ttl-seconds-after-finished", "3600", "--active-deadline-seconds", "86400"]));

        Assert.Equal((3600, 86400L), (job.Spec.TtlSecondsAfterFinished, job.Spec.ActiveDeadlineSeconds));
        Assert.Null(RankJob(Objects(Cpu)).Spec.TtlSecondsAfterFinished);
    }

    [Fact]
    public void A_rank_pod_s_torchrun_variables_alone_lead_its_ranks_to_the_coordinator_and_give_its_node_index()
    {
        var rank = RankPod(Objects(Gpu)).Containers[0];
        var env = rank.Env.Where(e => e.Value is not null && e.Name != "OEC_COORDINATOR").ToDictionary(e => e.Name, e => e.Value);

        Assert.Equal(new Uri(Env(rank, "OEC_COORDINATOR").Value), RankEnvironment.Resolve(null, env).Coordinator);
        Assert.Equal($"metadata.annotations['{JobManifests.CompletionIndexAnnotation}']", Env(rank, "NODE_RANK").ValueFrom.FieldRef.FieldPath);
        Assert.Equal("16", env["WORLD_SIZE"]);
    }

    [Theory]
    [InlineData("--queue = 'Team A'", "--queue", "Team A")]
    [InlineData("--node-selector = 'pool'", "--node-selector", "pool")]
    [InlineData("--node-selector = 'bad key=x'", "--node-selector", "bad key=x")]
    [InlineData("--toleration = 'spot:Sometimes'", "--toleration", "spot:Sometimes")]
    [InlineData("--pod-spread = 'rack'", "--pod-spread", "rack")]
    [InlineData("--priority-class = 'High'", "--priority-class", "High")]
    [InlineData("--service-account = 'a_b'", "--service-account", "a_b")]
    [InlineData("--image-pull-secret = 'Reg'", "--image-pull-secret", "Reg")]
    [InlineData("--ttl-seconds-after-finished = -1", "--ttl-seconds-after-finished", "-1")]
    [InlineData("--active-deadline-seconds = 0", "--active-deadline-seconds", "0")]
    public void Bad_scheduling_options_exit_with_2_naming_the_option_and_value(string expected, string option, string value) =>
        AssertRefused(expected, [.. Cpu, option, value]);
}
