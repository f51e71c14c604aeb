// LayerNormOp: without kernels it is nn.LayerNorm bit for bit; the kernel source run on the host meets LayerNorm in fp64;
// on a GPU the kernels match it (the self-check).
using Kernels.Ops;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Kernels.UnitTests;

public class LayerNormTests(ITestOutputHelper log)
{
    [Fact]
    public void Without_kernels_it_is_nn_LayerNorm_bit_for_bit_forward_and_gradients()
    {
        using var scope = NewDisposeScope();
        manual_seed(19);
        using var module = nn.LayerNorm([100], bias: false);
        using (no_grad()) module.weight!.normal_(1, 0.1);
        var x = randn(3, 7, 100) * 2 + 0.5;                       // [B, T, d]
        var dy = randn(3, 7, 100);

        var moduleX = x.detach().requires_grad_(true);
        var expected = module.forward(moduleX);
        expected.backward([dy]);

        var opX = x.detach().requires_grad_(true);
        var weight = module.weight!.detach().requires_grad_(true);
        var actual = LayerNormOp.Apply(null, opX, weight, 1e-5);
        actual.backward([dy]);

        Assert.True(actual.equal(expected).all().item<bool>(), "y differs");
        Assert.True(opX.grad!.equal(moduleX.grad!).all().item<bool>(), "dx differs");
        Assert.True(weight.grad!.equal(module.weight!.grad!).all().item<bool>(), "dweight differs");
    }

    [Fact]
    public void A_weight_of_another_length_is_refused_naming_both_sizes()
    {
        using var x = randn(7, 100);
        using var weight = ones(96);
        var e = Assert.Throws<ArgumentException>(() => LayerNormOp.Apply(null, x, weight, 1e-5));
        Assert.Contains("[96]", e.Message);
        Assert.Contains("[7, 100]", e.Message);
    }

    // Emulation/layernorm_host.cpp runs layernorm.cu's kernels on the host (cuda_host.h) as LayerNormOp launches them,
    // fp32 and bf16, against LayerNorm and its gradients in fp64: y, mean, rstd, dx, dweight; it exits with its misses.
    [Fact]
    public void On_the_host_the_kernel_source_meets_LayerNorm_and_its_gradients_in_fp64()
    {
        var (misses, output) = HostEmulation.Run("layernorm_host");
        log.WriteLine(output);
        Assert.True(misses == 0, output);
    }

    [SkippableFact]
    public void On_a_GPU_the_self_check_lists_layernorm_and_it_passes()
    {
        var rt = Gpu.Runtime();
        var entry = Assert.Single(KernelChecks.All, e => e.Name == "layernorm");
        var checks = entry.Run(rt).ToList();
        Assert.Equal(18, checks.Count); // 2 dtypes x 3 shapes x (y, dx, dweight)
        Assert.All(checks, check => Assert.True(check.Passed, check.ToString()));
    }
}
