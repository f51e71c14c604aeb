// Options of the optimizer, schedule, batch, precision and evaluation.
namespace Rank.Training;

/// <summary>The compute type of the matmuls (docs/architecture.md, "Mixed precision").</summary>
public enum Precision
{
    /// <summary>Everything in fp32.</summary>
    Fp32,
    /// <summary>autocast's flow: matmuls and attention in bf16 with bf16 outputs (weights cast once per step); the
    /// weights, their gradients, the optimizer state, LayerNorm, the residual stream, the loss and the statistics in fp32.</summary>
    Bf16,
}

public sealed record TrainOptions
{
    /// <summary>Optimizer steps in the run.</summary>
    public int Steps { get; init; } = 400;
    /// <summary>Sequences per micro-batch; a step takes batch_size * grad_accum sequences.</summary>
    public int BatchSize { get; init; } = 16;
    public int GradAccum { get; init; } = 1;
    /// <summary>Tokens per sequence (T).</summary>
    public int SequenceLength { get; init; } = 64;
    /// <summary>Peak learning rate, reached after the warmup.</summary>
    public double LearningRate { get; init; } = 3e-3;
    /// <summary>Floor of the cosine decay, reached at the last step.</summary>
    public double MinLearningRate { get; init; } = 1e-5;
    public int WarmupSteps { get; init; } = 40;
    public double WeightDecay { get; init; }
    public double Beta1 { get; init; } = 0.9;
    public double Beta2 { get; init; } = 0.95;
    public double Eps { get; init; } = 1e-8;
    /// <summary>Maximum global L2 norm of the gradient; 0 disables clipping.</summary>
    public double GradClip { get; init; } = 1.0;
    /// <summary>Seeds the initialisation and the batch order.</summary>
    public ulong Seed { get; init; } = 1337;
    /// <summary>Validate every this many steps (and after the last); 0 disables validation.</summary>
    public int EvalEvery { get; init; } = 100;
    /// <summary>Validation batches (of batch_size sequences) per evaluation.</summary>
    public int EvalBatches { get; init; } = 8;
    /// <summary>Write the metrics log and console progress every this many steps.</summary>
    public int LogEvery { get; init; } = 10;
    /// <summary>CPU threads for libtorch; 0 = the cores the rank process may use shared among the ranks on its machine,
    /// or Slurm's --cpus-per-task (Rank.Distributed.RankProcess.Threads).</summary>
    public int Threads { get; init; }
    /// <summary>fp32 (default) or bf16 matmuls over fp32 master weights.</summary>
    public Precision Precision { get; init; } = Precision.Fp32;
    /// <summary>Tokens per chunk of the fused head (Oec.ChunkedHead): the logits [chunk, V] of one chunk exist at a
    /// time. 0: as many as keep one chunk's fp32 logits within 256 MiB (Oec.ChunkedHead.AutoChunkBytes).</summary>
    public long LossChunkTokens { get; init; }
    /// <summary>Start each layer's gradient all-reduce during backward, as soon as the layer's gradients are final,
    /// instead of all of them after it (data-parallel ranks without a sharded vocabulary). Unset: on for GPU ranks,
    /// off for CPU ranks, where it measured 6% slower on 2 cores (docs/benchmarks.md: no idle core to hide the ring in).</summary>
    public bool? OverlapGradReduce { get; init; }

    /// <summary>Blocks that keep only their input and recompute their forward in backward: none, all, or every:k
    /// (blocks 0, k, 2k, ...). Less activation memory for about one more forward of those blocks.</summary>
    public string ActivationCheckpointing { get; init; } = "none";

    /// <summary>ZeRO stage over the data group (Rank.Parallel.ZeroAdamW): 0, every rank holds everything; 1, AdamW's
    /// state split over the dp ranks; 2, also the gradients; 3, also the blocks' weights (gathered per block; every
    /// block then recomputes its forward in backward).</summary>
    public int Zero { get; init; }

    /// <summary>The fused CUDA kernels (src/Kernels): auto, on where a CUDA device, its driver and NVRTC are found;
    /// on, required (an error names what is missing); off, the TorchSharp ops they replace. CPU ranks always run those.</summary>
    public string FusedKernels { get; init; } = "auto";

    /// <summary>train.activation_checkpointing parsed.</summary>
    public Rank.Parallel.ActivationCheckpointing Checkpointing => Rank.Parallel.ActivationCheckpointing.Parse(ActivationCheckpointing);

    /// <summary>train.overlap_grad_reduce as it applies to this device.</summary>
    public bool Overlaps => OverlapGradReduce ?? Device == "cuda";
    /// <summary>Where a rank computes: cpu, or cuda (the GPU numbered by the rank's LOCAL_RANK; cuda:0 for `oecrun train`).</summary>
    public string Device { get; init; } = "cpu";

    public void Validate()
    {
        Positive("train.steps", Steps);
        Positive("train.batch_size", BatchSize);
        Positive("train.grad_accum", GradAccum);
        Positive("train.sequence_length", SequenceLength);
        Positive("train.eval_batches", EvalBatches);
        Positive("train.log_every", LogEvery);
        if (!(LearningRate > 0) || double.IsInfinity(LearningRate)) Fail("train.learning_rate", LearningRate, "must be finite and > 0");
        if (!(MinLearningRate >= 0) || MinLearningRate > LearningRate) Fail("train.min_learning_rate", MinLearningRate, "must be in [0, learning_rate]");
        if (WarmupSteps < 0 || WarmupSteps > Steps) Fail("train.warmup_steps", WarmupSteps, "must be in [0, steps]");
        if (!(WeightDecay >= 0)) Fail("train.weight_decay", WeightDecay, "must be >= 0");
        if (!(Beta1 >= 0 && Beta1 < 1)) Fail("train.beta1", Beta1, "must be in [0, 1)");
        if (!(Beta2 >= 0 && Beta2 < 1)) Fail("train.beta2", Beta2, "must be in [0, 1)");
        if (!(Eps > 0)) Fail("train.eps", Eps, "must be > 0");
        if (!(GradClip >= 0)) Fail("train.grad_clip", GradClip, "must be >= 0 (0 disables clipping)");
        if (EvalEvery < 0) Fail("train.eval_every", EvalEvery, "must be >= 0 (0 disables validation)");
        if (LossChunkTokens < 0) Fail("train.loss_chunk_tokens", LossChunkTokens, "must be >= 0 (0 chooses by memory)");
        if (Threads < 0) Fail("train.threads", Threads, "must be >= 0 (0: this rank's share of the machine's cores, or Slurm's --cpus-per-task)");
        if (!Enum.IsDefined(Precision)) Fail("train.precision", Precision, "expected fp32 or bf16");
        Rank.Parallel.ActivationCheckpointing.Parse(ActivationCheckpointing); // throws naming the option and its value
        if (!global::Kernels.FusedKernels.Settings.Contains(FusedKernels)) Fail("train.fused_kernels", FusedKernels, "expected auto, on or off");
        if (Zero is < 0 or > 3) Fail("train.zero", Zero, "must be 0, 1, 2 or 3");
        if (Device is not ("cpu" or "cuda")) Fail("train.device", $"'{Device}'", "expected cpu or cuda (each rank takes the GPU of its LOCAL_RANK)");
    }

    /// <summary>Linear warmup from 0 to the peak over warmup_steps, then cosine decay to the floor at the last step.</summary>
    public double LearningRateAt(int step)
    {
        if (step < WarmupSteps) return LearningRate * (step + 1) / WarmupSteps;
        int decaySteps = Math.Max(1, Steps - 1 - WarmupSteps);
        double progress = Math.Min(1.0, (double)(step - WarmupSteps) / decaySteps);
        return MinLearningRate + 0.5 * (LearningRate - MinLearningRate) * (1 + Math.Cos(Math.PI * progress));
    }

    static void Positive(string key, int value)
    {
        if (value < 1) Fail(key, value, "must be >= 1");
    }

    static void Fail(string key, object value, string problem) => throw new ArgumentException($"{key} = {value}: {problem}");
}
