// AdamW's op: without kernels its steps are TorchSharp's AdamW, bit for bit; on a GPU the one-launch kernel matches them;
// on the host the kernel source steps as libtorch's ops do, op for op.
using Kernels.Ops;
using TorchSharp;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Kernels.UnitTests;

public class AdamWTests(ITestOutputHelper log)
{
    [Fact]
    public void Without_kernels_three_steps_with_weight_decay_give_the_bits_of_TorchSharps_AdamW()
    {
        using var scope = NewDisposeScope();
        manual_seed(11);
        var parameter = new Parameter(randn(1001) * 0.02);
        using var adamw = optim.AdamW([parameter], 1e-2, 0.9, 0.95, 1e-8, weight_decay: 0.1);
        var (data, m, v) = (parameter.detach().clone(), zeros(1001), zeros(1001));
        for (int step = 1; step <= 3; step++)
        {
            double lr = 1e-2 * step / 3;
            foreach (var group in adamw.ParamGroups) group.LearningRate = lr;
            var grad = randn(1001) * 1e-3;
            parameter.grad = grad.clone();
            adamw.step();
            AdamWOp.Apply(null, data, grad, m, v, step, lr, 0.1, 0.9, 0.95, 1e-8);
            Assert.True(data.equal(parameter.detach()).all().item<bool>(), $"step {step}: the parameters differ from TorchSharp's AdamW");
        }
    }

    [Fact]
    public void A_run_of_another_length_or_dtype_or_step_zero_is_refused_naming_it()
    {
        using var scope = NewDisposeScope();
        var (data, m, v) = (zeros(10), zeros(10), zeros(10));
        var length = Assert.Throws<ArgumentException>(() => AdamWOp.Apply(null, data, zeros(9), m, v, 1, 1e-3, 0, 0.9, 0.95, 1e-8));
        Assert.Equal("grad", length.ParamName);
        Assert.Contains("grad is [9], expected flat [10]", length.Message);
        var dtype = Assert.Throws<ArgumentException>(() => AdamWOp.Apply(null, data, zeros(10), m, zeros(10, ScalarType.Float64), 1, 1e-3, 0, 0.9, 0.95, 1e-8));
        Assert.Equal("expAvgSq", dtype.ParamName);
        var step = Assert.Throws<ArgumentException>(() => AdamWOp.Apply(null, data, zeros(10), m, v, 0, 1e-3, 0, 0.9, 0.95, 1e-8));
        Assert.Contains("step 0", step.Message);
    }

    [SkippableFact]
    public void On_a_GPU_every_self_check_of_the_kernel_is_within_its_tolerance()
    {
        var rt = Gpu.Runtime();
        var checks = AdamWOp.Checks(rt).ToList();
        Assert.Equal(5 * 3, checks.Count); // five runs, p, m and v
        Assert.All(checks, c => Assert.True(c.Passed, c.ToString()));
    }

    [SkippableFact]
    public void On_a_GPU_five_steps_of_the_kernel_follow_the_reference_and_CPU_runs_take_the_reference()
    {
        var rt = Gpu.Runtime();
        using var scope = NewDisposeScope();
        manual_seed(13);
        var p = randn(4099, device: CUDA) * 0.02;
        var (m, v) = (zeros(4099, device: CUDA), zeros(4099, device: CUDA));
        var (pRef, mRef, vRef) = (p.clone(), m.clone(), v.clone());
        for (int step = 1; step <= 5; step++)
        {
            var grad = randn(4099, device: CUDA) * 1e-3;
            AdamWOp.Apply(rt, p, grad, m, v, step, 3e-3 * step, 0.1, 0.9, 0.95, 1e-8);
            AdamWOp.Apply(null, pRef, grad, mRef, vRef, step, 3e-3 * step, 0.1, 0.9, 0.95, 1e-8);
        }
        Assert.True((p - pRef).abs().max().item<float>() <= 1e-6 * pRef.abs().max().item<float>(), "p drifted from the reference");
        Assert.True((v - vRef).abs().max().item<float>() <= 1e-6 * vRef.abs().max().item<float>(), "v drifted from the reference");

        var (cpu, cpuRef, g) = (randn(10), zeros(10), randn(10));
        cpuRef.copy_(cpu);
        var (m1, v1, m2, v2) = (zeros(10), zeros(10), zeros(10), zeros(10));
        AdamWOp.Apply(rt, cpu, g, m1, v1, 1, 1e-2, 0.1, 0.9, 0.95, 1e-8);
        AdamWOp.Reference(cpuRef, g, m2, v2, 1, 1e-2, 0.1, 0.9, 0.95, 1e-8);
        Assert.True(cpu.equal(cpuRef).all().item<bool>(), "a CPU run did not take the reference");
    }

    // Emulation/adamw_host.cpp includes adamw.cu as it is embedded and runs the kernel on the host, one thread per CUDA
    // thread (Emulation/cuda_host.h), against AdamWOp.Reference emulated op for op in fp32: m and v bit for bit, p within
    // the self-check's 2^-21 (the kernel's fp32 learning rate); it exits with its number of misses.
    [Fact]
    public void On_the_host_the_kernel_source_steps_p_m_and_v_as_libtorchs_ops_do()
    {
        var (misses, output) = HostEmulation.Run("adamw_host");
        log.WriteLine(output);
        Assert.True(misses == 0, output);
    }
}
