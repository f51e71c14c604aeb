// qk-LayerNorm fused with rotary: the reference path is the attention's former ops bit for bit (CPU), shapes it cannot
// take are refused by name, the kernel source run on the host meets the op in fp64, and on a GPU the kernels match the
// reference (the self-check's entry).
using Kernels.Ops;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Kernels.UnitTests;

public class QkNormRotaryTests(ITestOutputHelper log)
{
    /// <summary>What CausalSelfAttention ran before the op: its LayerNorm module on the slice in fp32, then rotary,
    /// spelled here with index_select (the swap of each pair) rather than Rotate's stack, to check the values, not the code.</summary>
    static Tensor FormerOps(Tensor qkv, int which, nn.Module<Tensor, Tensor> layerNorm, Tensor cos, Tensor sin)
    {
        long T = qkv.shape[1], hs = qkv.shape[4], rotated = hs / 2;
        var x = layerNorm.forward(qkv.select(2, which).transpose(1, 2).to_type(ScalarType.Float32)); // [B, nh, T, hs]
        var swap = tensor(Enumerable.Range(0, (int)rotated).Select(i => (long)(i ^ 1)).ToArray());  // (x1, x2) -> (x2, x1)
        var rot = x.narrow(3, 0, rotated);
        return cat([rot * cos.narrow(0, 0, T) + rot.index_select(3, swap) * sin.narrow(0, 0, T), x.narrow(3, rotated, hs - rotated)], -1);
    }

    [Theory]
    [InlineData(ScalarType.Float32, 0, 20)]
    [InlineData(ScalarType.Float32, 1, 56)]
    [InlineData(ScalarType.BFloat16, 0, 64)]
    [InlineData(ScalarType.BFloat16, 1, 20)]
    public void Without_kernels_the_output_and_the_gradients_are_the_former_module_ops_bit_for_bit(ScalarType dtype, int which, int hs)
    {
        using var scope = NewDisposeScope();
        manual_seed(which + hs);
        const int B = 2, T = 7, nh = 3;
        var layerNorm = nn.LayerNorm([hs], bias: false);
        using (no_grad()) layerNorm.weight.copy_(1 + 0.1 * randn(hs));
        var qkv = (randn([B, T, 3, nh, hs]) + 0.5).to_type(dtype);            // [B, T, 3, nh, hs], the c_attn output
        var cos = rand(T + 2, hs / 2) * 2 - 1;                              // [T_max, hs/2]
        var sin = rand(T + 2, hs / 2) * 2 - 1;
        var dy = randn(B, nh, T, hs);

        var x = qkv.detach().requires_grad_(true);
        var y = QkNormRotaryOp.Apply(null, x, which, layerNorm.weight, cos, sin);
        y.backward([dy]);
        var (opOut, opQkvGrad, opWeightGrad) = (y.detach(), x.grad!.clone(), layerNorm.weight.grad!.clone());

        layerNorm.zero_grad();
        var former = qkv.detach().requires_grad_(true);
        var expected = FormerOps(former, which, layerNorm, cos, sin);
        expected.backward([dy]);

        Assert.Equal(ScalarType.Float32, opOut.dtype);
        Assert.Equal(new long[] { B, nh, T, hs }, opOut.shape);
        Assert.True(Identical(opOut, expected.detach()), "output");
        Assert.True(Identical(opQkvGrad, former.grad!), "gradient of qkv");
        Assert.True(Identical(opWeightGrad, layerNorm.weight.grad!), "gradient of the weight");
        Assert.Equal(0, opQkvGrad.select(2, 2).count_nonzero().item<long>()); // v's slice gets nothing from q or k
    }

    static bool Identical(Tensor a, Tensor b) => a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.equal(b).all().item<bool>();

    [Fact]
    public void A_head_size_whose_half_is_odd_is_refused_naming_hs()
    {
        const int hs = 18; // hs/2 = 9: a pair would straddle the rotated half
        using var scope = NewDisposeScope();
        var e = Assert.Throws<ArgumentException>(() => QkNormRotaryOp.Apply(null, randn([1, 4, 3, 2, hs]), 0, ones(hs), ones(4, hs / 2), ones(4, hs / 2)));
        Assert.Contains("hs = 18", e.Message);
    }

    [Fact]
    public void Tables_shorter_than_the_sequence_and_a_weight_of_another_size_are_refused_by_name()
    {
        using var scope = NewDisposeScope();
        var qkv = randn([1, 8, 3, 2, 20]); // T 8, hs 20
        var cos = Assert.Throws<ArgumentException>(() => QkNormRotaryOp.Apply(null, qkv, 1, ones(20), ones(7, 10), ones(8, 10)));
        Assert.Contains("cos", cos.Message);
        var weight = Assert.Throws<ArgumentException>(() => QkNormRotaryOp.Apply(null, qkv, 1, ones(16), ones(8, 10), ones(8, 10)));
        Assert.Contains("weight", weight.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => QkNormRotaryOp.Apply(null, qkv, 3, ones(20), ones(8, 10), ones(8, 10)));
    }

    // Emulation/qk_norm_rotary_host.cpp runs qk_norm_rotary.cu's kernels on the host (cuda_host.h) as QkNormRotaryOp
    // launches them, fp32 and bf16 qkv, q and k, hs 8, 20 and 72, against LayerNorm + rotary and their gradients in
    // fp64: out, mean, rstd, dqkv, dweight; it exits with its number of misses.
    [Fact]
    public void On_the_host_the_kernel_source_meets_LayerNorm_and_rotary_and_their_gradients_in_fp64()
    {
        var (misses, output) = HostEmulation.Run("qk_norm_rotary_host");
        log.WriteLine(output);
        Assert.True(misses == 0, output);
    }

    [SkippableFact]
    public void On_a_GPU_the_kernels_match_the_reference_in_every_case_of_the_self_check()
    {
        var rt = Gpu.Runtime();
        var checks = KernelChecks.All.Single(c => c.Name == "qk-norm-rotary").Run(rt).ToList();
        foreach (var check in checks) log.WriteLine(check.ToString());
        Assert.Equal(2 * 3 * 2 * 3, checks.Count); // dtypes x shapes x (q, k) x (out, dqkv, dweight)
        Assert.All(checks, c => Assert.True(c.Passed, c.ToString()));
    }
}
