// `oecrun kernels`: where the fused kernels cannot run it says why and exits 2; its help lists the kernel families;
// --compile fills the kernel cache without a GPU; train.fused_kernels is refused by name when it is not auto, on or off.
using Kernels;
using TorchSharp;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class KernelsCommandTests
{
    [SkippableFact]
    public void Without_a_GPU_the_command_says_what_is_missing_and_exits_2()
    {
        Skip.If(torch.cuda.is_available(), "this machine has CUDA");
        var (code, _, error) = Invoke("kernels", "--check");
        Assert.Equal(2, code);
        Assert.Contains("kernels: the fused kernels cannot run on cuda:0", error);
        Assert.Contains("CUDA is not available to TorchSharp", error);
    }

    [Fact]
    public void The_help_lists_every_kernel_family_in_the_order_the_check_runs_them()
    {
        var (code, output, _) = Invoke("kernels", "--help");
        Assert.Equal(0, code);
        Assert.Contains(string.Join(", ", KernelChecks.All.Select(k => k.Name)), output);
        Assert.Equal(["layernorm", "qk-norm-rotary", "swiglu", "cross-entropy", "adamw"], KernelChecks.All.Select(k => k.Name));
    }

    [Fact]
    public void Compile_fills_the_kernel_cache_for_an_architecture_without_a_GPU_and_names_one_NVRTC_does_not_know()
    {
        using var temp = new Tests.TempDirectory();
        string? previous = Environment.GetEnvironmentVariable(KernelCache.Variable);
        Environment.SetEnvironmentVariable(KernelCache.Variable, temp.Path);
        try
        {
            var (code, output, error) = Invoke("kernels", "--compile", "80");
            Assert.True(code == 0, error);
            Assert.Equal(KernelSources.Names().Count(n => n.EndsWith(".cu")), Directory.GetFiles(temp.Path, "*.cubin").Length);
            foreach (string kernel in new[] { "layernorm_forward_bf16", "qk_norm_rotary_backward_f32", "swiglu_backward_bf16", "cross_entropy_f32", "adamw_step_f32" })
                Assert.Contains($"sm_80 {kernel}: ", output);
            Assert.Contains("0/0 bytes spilled/reloaded", output);

            (code, _, error) = Invoke("kernels", "--compile", "80,12");
            Assert.Equal(2, code);
            Assert.Contains("--compile '12': NVRTC", error);
        }
        finally { Environment.SetEnvironmentVariable(KernelCache.Variable, previous); }
    }

    [Fact]
    public void A_fused_kernels_setting_other_than_auto_on_or_off_is_refused_by_name()
    {
        var (code, _, error) = Invoke("train", "train.fused_kernels=yes", "run.out_dir=unused");
        Assert.Equal(2, code);
        Assert.Contains("train.fused_kernels = yes: expected auto, on or off", error);
    }
}
