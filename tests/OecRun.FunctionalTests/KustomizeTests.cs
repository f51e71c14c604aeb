// deploy/k8s's kustomize overlays rendered by a real `kubectl kustomize`, loaded into the official client's models and
// checked against the invariants a running job depends on.
using System.Diagnostics;
using k8s.Models;
using static OecRun.UnitTests.KubernetesObjects;

namespace OecRun.FunctionalTests;

public class KustomizeTests
{
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
}
