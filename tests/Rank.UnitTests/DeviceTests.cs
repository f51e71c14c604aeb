// train.device: the refusal where there is no GPU; on a GPU, the CUDA trainer against the CPU trainer and a resume.
using Job;
using Rank.Training;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class DeviceTests(ITestOutputHelper log)
{
    static bool HasGpu() => ComputeDevice.Probe().Count > 0;

    /// <summary>One trainer without a communicator: world size 1, where GPU ranks need no backend.</summary>
    static Configuration.RunConfig OneProcess(Configuration.RunConfig config) => config with { Job = config.Job with { WorldSize = 1 } };

    [SkippableFact]
    public void Without_a_GPU_train_device_cuda_fails_naming_what_was_found_and_what_was_expected()
    {
        Skip.If(HasGpu(), "this machine has a GPU");
        using var temp = new TempDirectory();
        var config = OneProcess(TestConfigs.Tiny(temp.Path)).WithTrain(t => t with { Device = "cuda" });

        var e = Assert.Throws<InvalidOperationException>(() => new Trainer(config, localRank: 1));

        log.WriteLine(e.Message);
        Assert.Contains("train.device = cuda for local rank 1", e.Message);
        Assert.Contains("expected a libtorch with CUDA and at least 2 GPU(s)", e.Message);
        Assert.Contains("0 CUDA device(s) visible", e.Message);
        Assert.Contains(TorchRuntime.Source!.Directory is null ? "bundled with oecrun (CPU only" : TorchRuntime.Source.Directory!, e.Message);
    }

    [Fact]
    public void Ranks_sharing_GPUs_over_tcp_wrap_LOCAL_RANK_round_the_GPUs_and_without_one_keep_it_for_the_refusal()
    {
        int count = ComputeDevice.Probe().Count;

        if (count == 0) Assert.Equal(3, ComputeDevice.SharedGpu(3));
        else Assert.Equal((0, 1 % count), (ComputeDevice.SharedGpu(count), ComputeDevice.SharedGpu(count + 1)));
    }

    [SkippableFact]
    public void On_a_GPU_the_CUDA_trainer_follows_the_CPU_trainer_and_a_resumed_run_the_uninterrupted_one()
    {
        Skip.IfNot(HasGpu(), "needs a CUDA device");
        using var temp = new TempDirectory();
        var cpuConfig = OneProcess(TestConfigs.Tiny(Path.Combine(temp.Path, "cpu"), steps: 20));
        var gpuConfig = cpuConfig.WithTrain(t => t with { Device = "cuda" }) with { Run = new() { OutDir = Path.Combine(temp.Path, "gpu") } };
        using var onCpu = new Trainer(cpuConfig);
        using var onGpu = new Trainer(gpuConfig);
        Assert.Equal(DeviceType.CUDA, onGpu.Model.OutputEmbedding.device_type);

        for (int step = 0; step < 20; step++)
        {
            double a = onCpu.Step(step).CrossEntropy, b = onGpu.Step(step).CrossEntropy;
            // Same initialisation and batches; kernels and TF32 matmuls differ in rounding, which training amplifies slowly.
            Assert.True(Math.Abs(a - b) < (step == 0 ? 1e-3 : 2e-2), $"step {step}: CPU loss {a:F5}, GPU loss {b:F5}");
        }

        // A GPU run with a checkpoint at step 10, and a run resumed from it: the same losses after the resume.
        var whole = gpuConfig with { Job = gpuConfig.Job with { CheckpointEvery = 10 } };
        whole = whole.WithTrain(t => t with { LogEvery = 1 });
        using (var uninterrupted = new Trainer(whole)) uninterrupted.Run(TextWriter.Null);
        var again = whole with { Run = new() { OutDir = Path.Combine(temp.Path, "resumed") } };
        string checkpoint = Path.Combine(whole.Run.OutDir!, "checkpoints", "step_00000010");
        using (var resumed = new Trainer(again))
            resumed.Run(TextWriter.Null, new LocalSession(again.Run.OutDir!, 3, again.ToJson(), resumed.DataCursorAt, startStep: 10, resumeFrom: checkpoint));
        var expected = MetricsLog.Read(Path.Combine(whole.Run.OutDir!, "metrics.jsonl")).Where(m => m.Step > 10).ToList();
        var actual = MetricsLog.Read(Path.Combine(again.Run.OutDir!, "metrics.jsonl")).ToList();
        Assert.Equal(expected.Select(m => m.Step), actual.Select(m => m.Step));
        foreach (var (e, a) in expected.Zip(actual)) // GPU kernels (atomics in the embedding's backward) need not be bitwise repeatable
            Assert.True(Math.Abs(e.TrainLoss - a.TrainLoss) < 1e-3, $"step {e.Step}: uninterrupted {e.TrainLoss:F6}, resumed {a.TrainLoss:F6}");
    }
}
