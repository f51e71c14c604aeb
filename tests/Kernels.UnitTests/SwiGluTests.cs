// SwiGLU's op: without kernels it is the model's former silu(a) * b, bit for bit; on a GPU the kernels match it; on the
// host the kernel source meets the closed form in fp64.
using Kernels.Ops;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Kernels.UnitTests;

public class SwiGluTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Without_kernels_the_output_and_both_gradients_are_those_of_silu_times_b_bit_for_bit(ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        manual_seed(3);
        var a = (randn(7, 100) * 2).to_type(dtype).requires_grad_();
        var b = randn(7, 100).to_type(dtype).requires_grad_();
        var g = randn(7, 100).to_type(dtype);

        var y = SwiGluOp.Apply(null, a, b);
        var grads = torch.autograd.grad([y], [a, b], [g]);
        var expected = nn.functional.silu(a) * b; // SwiGlu.forward before the op
        var expectedGrads = torch.autograd.grad([expected], [a, b], [g]);

        Assert.Equal(dtype, y.dtype);
        Assert.True(y.equal(expected).all().item<bool>(), "y differs");
        Assert.True(grads[0].equal(expectedGrads[0]).all().item<bool>(), "da differs");
        Assert.True(grads[1].equal(expectedGrads[1]).all().item<bool>(), "db differs");
    }

    [Fact]
    public void Inputs_of_different_shapes_or_dtypes_are_refused_naming_both()
    {
        using var scope = NewDisposeScope();
        var shape = Assert.Throws<ArgumentException>(() => SwiGluOp.Apply(null, zeros(7, 100), zeros(7, 1)));
        Assert.Contains("a [7, 100] and b [7, 1]", shape.Message);
        var dtype = Assert.Throws<ArgumentException>(() => SwiGluOp.Apply(null, zeros(7, 100), zeros(7, 100, ScalarType.BFloat16)));
        Assert.Contains("a is Float32 and b BFloat16", dtype.Message);
    }

    [SkippableFact]
    public void On_a_GPU_every_self_check_of_the_kernels_is_within_its_tolerance()
    {
        var rt = Gpu.Runtime();
        var checks = SwiGluOp.Checks(rt).ToList();
        Assert.Equal(2 * 4 * 3, checks.Count); // fp32 and bf16, four shapes, y and two gradients
        Assert.All(checks, c => Assert.True(c.Passed, c.ToString()));
    }

    [SkippableFact]
    public void On_a_GPU_the_kernels_train_through_backward_and_CPU_inputs_take_the_reference()
    {
        var rt = Gpu.Runtime();
        using var scope = NewDisposeScope();
        manual_seed(5);
        var a = randn(33, 768, ScalarType.BFloat16, CUDA).requires_grad_();
        var b = randn(33, 768, ScalarType.BFloat16, CUDA).requires_grad_();
        SwiGluOp.Apply(rt, a, b).sum().backward();
        var (aRef, bRef) = (a.detach().requires_grad_(), b.detach().requires_grad_());
        SwiGluOp.Reference(aRef, bRef).sum().backward();
        Assert.True(a.grad!.to_type(ScalarType.Float32).allclose(aRef.grad!.to_type(ScalarType.Float32), rtol: 1.0 / 64, atol: 1e-2), "da differs beyond bf16 rounding");
        Assert.True(b.grad!.to_type(ScalarType.Float32).allclose(bRef.grad!.to_type(ScalarType.Float32), rtol: 1.0 / 64, atol: 1e-2), "db differs beyond bf16 rounding");

        var (x, z) = (randn(7, 100), randn(7, 100));
        Assert.True(SwiGluOp.Apply(rt, x, z).equal(SwiGluOp.Reference(x, z)).all().item<bool>(), "a CPU input did not take the reference");
    }

    // Emulation/swiglu_host.cpp includes swiglu.cu as it is embedded and runs both kernels on the host, one thread per
    // CUDA thread (Emulation/cuda_host.h), fp32 and bf16 through the packs, the tail and an unaligned start, against
    // y, da and db in fp64; it exits with its number of misses.
    [Fact]
    public void On_the_host_the_kernel_source_meets_silu_times_b_and_its_gradients_in_fp64()
    {
        var (misses, output) = HostEmulation.Run("swiglu_host");
        log.WriteLine(output);
        Assert.True(misses == 0, output);
    }
}
