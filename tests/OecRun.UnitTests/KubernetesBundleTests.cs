// `oecrun k8s --bundle`: the published bundle run from the shared volume in a stock image, in the rendered objects
// (strictly loaded into the client's models): the command, the mount it lies on, and the environment.
using k8s.Models;
using OecRun.Kubernetes;
using static OecRun.UnitTests.CommandLineRun;
using static OecRun.UnitTests.KubernetesObjects;

namespace OecRun.UnitTests;

public class KubernetesBundleTests
{
    const string Bundle = "/shared/oec/oecrun-linux-x64";
    static readonly string[] Gpu = ["k8s", "--name", "job", "--image", "pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime", "--ranks", "8", "--ranks-per-pod", "8", "--gpus-per-rank", "1"];

    static (V1PodSpec Coordinator, V1PodSpec Rank) Pods(params string[] args)
    {
        var (code, output, error) = Invoke(args);
        Assert.True(code == 0, error);
        var objects = Load(output);
        var job = Invariants(objects, gpusPerRank: args.Contains("--gpus-per-rank") ? 1 : 0);
        return (Assert.Single(objects.OfType<V1Deployment>()).Spec.Template.Spec, job.Spec.Template.Spec);
    }

    [Fact]
    public void The_coordinator_and_the_ranks_run_the_bundles_oecrun_from_the_shared_volume_in_the_stock_image()
    {
        var (coordinator, rank) = Pods([.. Gpu, "--bundle", Bundle, "--libtorch", "python"]);

        foreach (var (pod, command) in new[] { (coordinator, "coordinator"), (rank, "rank") })
        {
            var container = Assert.Single(pod.Containers);
            Assert.Equal("pytorch/pytorch:2.10.0-cuda12.8-cudnn9-runtime", container.Image);
            Assert.Equal([$"{Bundle}/oecrun"], container.Command);
            Assert.Equal(command, container.Args[0]); // the same arguments as the image's entrypoint gets
            Assert.StartsWith(JobManifests.SharedMount + "/", container.Command[0]);                // on the claim every pod mounts
            Assert.NotNull(Volume(pod, JobManifests.SharedMount, container).PersistentVolumeClaim);
            Assert.Equal("/tmp", Env(container, "HOME").Value);
        }
        Assert.Equal("python", Env(Assert.Single(rank.Containers), "OEC_LIBTORCH").Value);
        Assert.DoesNotContain(Assert.Single(coordinator.Containers).Env, e => e.Name == "OEC_LIBTORCH"); // the coordinator loads no libtorch
    }

    [Fact]
    public void A_cpu_bundle_in_a_stock_image_needs_no_libtorch_setting()
    {
        var (_, rank) = Pods("k8s", "--name", "job", "--image", "mcr.microsoft.com/dotnet/runtime-deps:10.0", "--ranks", "4", "--bundle", Bundle + "-cpu/");

        var container = Assert.Single(rank.Containers);
        Assert.Equal([$"{Bundle}-cpu/oecrun"], container.Command);
        Assert.DoesNotContain(container.Env, e => e.Name == "OEC_LIBTORCH");
    }

    [Fact]
    public void Without_a_bundle_the_images_entrypoint_runs()
    {
        var (coordinator, rank) = Pods(Gpu);

        Assert.All(new[] { coordinator, rank }, pod => Assert.Null(Assert.Single(pod.Containers).Command));
        Assert.All(new[] { coordinator, rank }, pod => Assert.DoesNotContain(Assert.Single(pod.Containers).Env, e => e.Name is "HOME" or "OEC_LIBTORCH"));
    }

    [Theory]
    [InlineData("--bundle = 'oec/oecrun-linux-x64'", "--bundle", "oec/oecrun-linux-x64")]
    [InlineData("--bundle = '/opt/oecrun'", "--bundle", "/opt/oecrun")]
    [InlineData("--bundle = '/shared/../etc'", "--bundle", "/shared/../etc")]
    [InlineData("--bundle = '/shared/'", "--bundle", "/shared/")]
    [InlineData("--libtorch = 'torch/lib'", "--libtorch", "torch/lib")]
    public void Bad_bundle_options_exit_with_2_naming_the_option_and_value(string expected, string option, string value) =>
        AssertRefused(expected, [.. Gpu, option, value]);
}
