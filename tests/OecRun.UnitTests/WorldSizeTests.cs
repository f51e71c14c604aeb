// job.world_size up to 65536 (1024 nodes of 8 GPUs are 8192): the configuration, bench-coordinator and oecrun k8s at
// the cap and one beyond it.
using Job;
using k8s.Models;
using OecRun.Kubernetes;
using Rank.Configuration;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class WorldSizeTests
{
    [Theory]
    [InlineData(8192)]
    [InlineData(65536)]
    public void A_world_of_up_to_65536_ranks_is_a_valid_configuration(int ranks)
    {
        var config = RunConfig.Load(null, [$"job.world_size={ranks}", $"train.batch_size={ranks}", "run.out_dir=unused"]);

        Assert.Equal(ranks, config.Job.WorldSize);
        Assert.Equal(65536, JobOptions.MaxWorldSize);
    }

    [Fact]
    public void A_world_of_65537_ranks_is_refused_naming_the_range()
    {
        var e = Assert.Throws<ArgumentException>(() => RunConfig.Load(null, ["job.world_size=65537", "train.batch_size=65537", "run.out_dir=unused"]));

        Assert.Equal("job.world_size = 65537: must be in [1, 65536]", e.Message);
    }

    [Theory]
    [InlineData("65537")]
    [InlineData("0")]
    public void Bench_coordinator_refuses_ranks_outside_the_world_sizes_range(string ranks)
    {
        var (code, _, error) = Invoke("bench-coordinator", "--ranks", ranks);

        Assert.Equal(2, code);
        Assert.Contains($"--ranks {ranks}: must be in [1, 65536] (job.world_size's range)", error);
    }

    [Fact]
    public void The_largest_world_renders_pods_whose_host_names_fit_a_dns_label_with_the_longest_name()
    {
        string name = "j" + new string('x', ManifestOptions.MaxNameLength - 1);
        var (code, output, error) = Invoke("k8s", "--name", name, "--image", "img", "--ranks", "65536", "train.batch_size=65536");
        Assert.True(code == 0, error);

        var job = Assert.Single(KubernetesObjects.Load(output).OfType<V1Job>());
        Assert.Equal(65536, job.Spec.Completions);
        string lastHost = $"{job.Metadata.Name}-{job.Spec.Completions - 1}"; // an Indexed Job's pod host name: {name}-ranks-65535
        Assert.True(lastHost.Length <= 63, $"{lastHost}: {lastHost.Length} characters, more than a DNS label's 63");
    }

    [Fact]
    public void K8s_refuses_more_ranks_than_a_world_holds()
    {
        var (code, output, error) = Invoke("k8s", "--name", "job", "--image", "img", "--ranks", "65537");

        Assert.Equal(2, code);
        Assert.Contains("--ranks = 65537: must be in [1, 65536] (job.world_size's range)", error);
        Assert.Equal("", output);
    }
}
