// `oecrun bench-gpu`: the same GPT trained in PyTorch and in oecrun on one GPU; tokens/s, MFU and memory side by side.
using System.CommandLine;
using OecRun.Bench;
using Rank;

namespace OecRun.Commands;

public static class BenchGpuCommand
{
    public static Command Create()
    {
        var command = new Command("bench-gpu", "Train the same GPT for the same steps in PyTorch (each mode in its own process) and in oecrun on one GPU, " +
                                               "and print tokens/s, MFU, device memory and the ratio to PyTorch eager. Needs OEC_LIBTORCH with CUDA and a python with torch.");
        var b = new OptionBinder<GpuBenchOptions>(command, new GpuBenchOptions());
        var d = b.Defaults;
        void Int(string name, string description, int value, Func<GpuBenchOptions, int, GpuBenchOptions> set) =>
            b.Add(new Option<int>(name) { Description = description, DefaultValueFactory = _ => value }, set);
        Int("--steps", "Timed steps per row, each synchronised.", d.Steps, (o, v) => o with { Steps = v });
        Int("--warmup", "Untimed steps first (torch.compile compiles there).", d.Warmup, (o, v) => o with { Warmup = v });
        Int("--batch", "Sequences per step.", d.Batch, (o, v) => o with { Batch = v });
        Int("--seq", "Tokens per sequence.", d.Sequence, (o, v) => o with { Sequence = v });
        Int("--d-model", "Model width.", d.Dim, (o, v) => o with { Dim = v });
        Int("--n-layer", "Transformer blocks.", d.Layers, (o, v) => o with { Layers = v });
        Int("--n-head", "Attention heads.", d.Heads, (o, v) => o with { Heads = v });
        Int("--vocab", "Vocabulary (a multiple of 64, as the model pads it).", d.Vocab, (o, v) => o with { Vocab = v });
        b.Add(new Option<string>("--precision") { Description = "bf16 (oecrun: train.precision=bf16; PyTorch: autocast) or fp32 (TF32 matmuls).", DefaultValueFactory = _ => d.Precision },
            (o, v) => o with { Precision = v });
        b.Add(new Option<string>("--device") { Description = "cuda (GPU 0), or cpu for a small smoke run.", DefaultValueFactory = _ => d.Device }, (o, v) => o with { Device = v });
        b.Add(new Option<string>("--modes") { Description = "Comma-separated PyTorch modes: eager, compile.", DefaultValueFactory = _ => string.Join(',', d.Modes) },
            (o, v) => o with { Modes = CommandLine.SplitList(v) });
        b.Add(new Option<string>("--python") { Description = "The python with torch.", DefaultValueFactory = _ => d.Python }, (o, v) => o with { Python = v });
        b.Add(new Option<double>("--peak-tflops") { Description = "The GPU's dense bf16 peak in TFLOP/s, for MFU.", DefaultValueFactory = _ => d.PeakTflops },
            (o, v) => o with { PeakTflops = v });
        b.Add(new Option<long>("--loss-chunk-tokens") { Description = "oecrun's train.loss_chunk_tokens (tokens per chunk of the fused head; 0: automatic)." },
            (o, v) => o with { LossChunkTokens = v });
        b.Add(new Option<string>("--fused-kernels") { Description = "oecrun's train.fused_kernels: auto, on or off. Where the kernels run, a row with them off follows for comparison.", DefaultValueFactory = _ => "auto" },
            (o, v) => o with { FusedKernels = v });
        b.Add(new Option<bool>("--profile") { Description = "Also profile oecrun's step (phases by CUDA events on the GPU) and print it under the table." },
            (o, v) => o with { Profile = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            if (o.Precision is not ("bf16" or "fp32")) throw new ArgumentException($"--precision {o.Precision}: expected bf16 or fp32");
            if (o.Modes.FirstOrDefault(m => m is not ("eager" or "compile")) is string bad) throw new ArgumentException($"--modes: '{bad}': expected eager or compile");
            if (o.Steps < 1 || o.Warmup < 0) throw new ArgumentException($"--steps {o.Steps} --warmup {o.Warmup}: expected at least 1 timed step and no negative warmup");
            TorchRuntime.EnsureLoaded();
            var failures = new List<string>();
            GpuBench.Run(o, Console.Out, failures);
            return failures.Count == 0 ? Job.ExitCodes.Success : Job.ExitCodes.Failed;
        });
        return command;
    }
}
