// The GPU benchmark: one GPT, the same steps, in oecrun and in PyTorch (eager bf16 autocast, torch.compile), one run.
using System.Diagnostics;
using System.Text.Json;
using Oec;
using Rank;
using Rank.Configuration;
using Rank.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace OecRun.Bench;

/// <summary>Shapes and steps of one comparison; the defaults are GPT-2 small's shapes (d 768, 12 layers, 12 heads,
/// vocabulary 50304, T 1024) at batch 16.</summary>
public sealed record GpuBenchOptions
{
    public int Steps { get; init; } = 30;
    public int Warmup { get; init; } = 5;
    public int Batch { get; init; } = 16;
    public int Sequence { get; init; } = 1024;
    public int Dim { get; init; } = 768;
    public int Layers { get; init; } = 12;
    public int Heads { get; init; } = 12;
    public int Vocab { get; init; } = 50304;
    public string Precision { get; init; } = "bf16";
    public string Device { get; init; } = "cuda";
    /// <summary>PyTorch modes to compare against, in order: eager, compile.</summary>
    public IReadOnlyList<string> Modes { get; init; } = ["eager", "compile"];
    public string Python { get; init; } = "python3";
    /// <summary>Dense bf16 peak of the GPU for MFU, TFLOP/s (989: H100/H200 SXM).</summary>
    public double PeakTflops { get; init; } = 989;
    public double LearningRate { get; init; } = 6e-4;
    /// <summary>oecrun's train.loss_chunk_tokens: tokens per chunk of the fused head; 0 = its automatic size.</summary>
    public long LossChunkTokens { get; init; }
    /// <summary>oecrun's train.fused_kernels: auto, on or off.</summary>
    public string FusedKernels { get; init; } = "auto";
    /// <summary>Profile oecrun's step (oec.method = none) over <see cref="ProfiledSteps"/> more steps after its timed ones.</summary>
    public bool Profile { get; init; }
    public int ProfiledSteps => Math.Clamp(Steps, 1, 10);
}

/// <summary>One measured configuration: median step time over the timed steps, and memory as each framework sees it.</summary>
public sealed record GpuBenchRow(string Framework, string Mode, long Parameters, double FlopsPerToken, double MedianMs, double TokensPerSecond,
                                 double? Mfu, long? DeviceUsedBytes, long? PeakAllocatedBytes, IReadOnlyList<double> Losses);

public static class GpuBench
{
    /// <summary>The Python file beside oecrun (copied by the build and the publish).</summary>
    public static string ReferenceScript => Path.Combine(AppContext.BaseDirectory, "Bench", "gpt_reference.py");

    static readonly TimeSpan PythonTimeout = TimeSpan.FromMinutes(20); // torch.compile of a 12-layer GPT takes about a minute

    /// <summary>
    /// PyTorch first, each mode in a process of its own that exits before the next starts, then oecrun in this process:
    /// "device memory used" (total - free at the end, context included) then counts one framework at a time. Prints a
    /// markdown table with tokens/s, MFU, memory and each row's ratio to PyTorch eager. A PyTorch mode that fails
    /// (torch.compile without a compiler, say) is reported under the table and the rest still run: <paramref name="failures"/>.
    /// </summary>
    public static IReadOnlyList<GpuBenchRow> Run(GpuBenchOptions o, TextWriter console, List<string>? failures = null)
    {
        var rows = new List<GpuBenchRow>();
        var failed = failures ?? [];
        void Measured(GpuBenchRow row) // each row as soon as it is measured: a run stopped by a time limit keeps the rows it had
        {
            rows.Add(row);
            console.WriteLine($"measured: {row.Framework}, {row.Mode}: {row.MedianMs:F1} ms/step, {row.TokensPerSecond:N0} tokens/s, device memory used {Gib(row.DeviceUsedBytes)}");
        }
        foreach (string mode in o.Modes)
        {
            try { Measured(PyTorch(o, mode, console)); }
            catch (Exception e) when (e is InvalidOperationException or TimeoutException) { failed.Add($"pytorch {mode}: {e.Message}"); }
        }
        using var profile = o.Profile ? new StepProfile(o.Device == "cuda" ? new Device(DeviceType.CUDA, 0) : CPU) : null;
        Measured(Ours(o, OecMethod.None, profile, o.FusedKernels));
        Measured(Ours(o, OecMethod.MuCentering, null, o.FusedKernels));
        if (rows[^1].Mode.EndsWith("kernels on", StringComparison.Ordinal)) Measured(Ours(o, OecMethod.None, null, "off")); // the same step unfused
        if (rows.Select(r => r.Parameters).Distinct().Count() != 1)
            throw new InvalidOperationException($"the frameworks built different models: parameters {string.Join(" vs ", rows.Select(r => $"{r.Framework} {r.Parameters:N0}"))}");

        var eager = rows.FirstOrDefault(r => r.Framework.StartsWith("pytorch", StringComparison.Ordinal) && r.Mode.StartsWith("eager", StringComparison.Ordinal));
        console.WriteLine($"GPT d {o.Dim}, {o.Layers} layers, {o.Heads} heads, vocabulary {o.Vocab}, T {o.Sequence}, batch {o.Batch}, {rows[0].Parameters:N0} parameters, " +
                          $"{o.Precision}, {o.Steps} timed steps after {o.Warmup}; oecrun's loss chunk {Oec.ChunkedHead.ChunkTokens(o.LossChunkTokens, o.Vocab)} tokens; MFU against {o.PeakTflops} TFLOP/s");
        console.WriteLine("| framework | mode | median ms/step | tokens/s | MFU | device memory used | peak allocated | tokens/s vs PyTorch eager |");
        console.WriteLine("|---|---|---|---|---|---|---|---|");
        foreach (var r in rows)
            console.WriteLine($"| {r.Framework} | {r.Mode} | {r.MedianMs:F1} | {r.TokensPerSecond:N0} | {(r.Mfu is double m ? $"{m:P1}" : "-")} | {Gib(r.DeviceUsedBytes)} " +
                              $"| {Gib(r.PeakAllocatedBytes)} | {(eager is null ? "-" : $"{r.TokensPerSecond / eager.TokensPerSecond:F2}x")} |");
        console.WriteLine("device memory used: total - free at the end of the row; oecrun's rows share one process, so the second reads at least what the first's cached blocks hold");
        var device = o.Device == "cuda" ? new Device(DeviceType.CUDA, 0) : CPU;
        var model = new Rank.Model.ModelOptions { NLayer = o.Layers, DModel = o.Dim, NHead = o.Heads };
        var kernels = Kernels.FusedKernels.Resolve(o.FusedKernels, device);
        var (adamw, flat) = TrainingBench.TimeOptimizers(() => new Rank.Model.Gpt(model, o.Vocab, o.Sequence), device, o.Steps, kernels);
        console.WriteLine($"the optimizer step alone on {o.Device}: TorchSharp's AdamW {adamw:F2} ms, FlatAdamW (what oecrun runs{(kernels is null ? "" : ", the fused kernel")}) {flat:F2} ms, ratio {flat / adamw:F2}");
        profile?.Write(console, $"oecrun's step profile (oec.method = none, {o.Precision}; block 0 stands for each block)");
        foreach (string failure in failed) console.WriteLine($"failed: {failure}");
        return rows;
    }

    static string Gib(long? bytes) => bytes is long b ? $"{b / (double)(1L << 30):F1} GiB" : "-";

    /// <summary>6N + 12 L T d per token (PaLM/nanoGPT), N counting every parameter, embeddings included: the same
    /// formula as gpt_reference.py.</summary>
    static double FlopsPerToken(GpuBenchOptions o, long parameters) => 6.0 * parameters + 12.0 * o.Layers * o.Sequence * o.Dim;

    /// <summary>oecrun's side of the comparison: one rank (no job), the same model and steps, on o.Device.</summary>
    public static RunConfig Config(GpuBenchOptions o, OecMethod method, string fusedKernels = "auto") => new RunConfig
    {
        Job = new() { WorldSize = 1 },
        Model = new() { NLayer = o.Layers, DModel = o.Dim, NHead = o.Heads },
        Oec = new() { Method = method },
        Data = new() { VocabSize = o.Vocab, SyntheticTokens = 4 * o.Batch * (o.Sequence + 1) }, // a few batches, repeated
        Train = new()
        {
            Steps = o.Warmup + o.Steps, BatchSize = o.Batch, SequenceLength = o.Sequence, LearningRate = o.LearningRate, WarmupSteps = 0,
            EvalEvery = 0, Device = o.Device, Precision = o.Precision == "bf16" ? Precision.Bf16 : Precision.Fp32, LossChunkTokens = o.LossChunkTokens,
            FusedKernels = fusedKernels,
        },
        Run = new() { OutDir = Path.Combine(Path.GetTempPath(), "oec-bench-gpu") },
    }.Validated();

    /// <summary>oecrun's row: o.Warmup + o.Steps steps, each synchronised, the last o.Steps timed; then, with a profile,
    /// o.ProfiledSteps more steps profiled.</summary>
    static GpuBenchRow Ours(GpuBenchOptions o, OecMethod method, StepProfile? profile, string fusedKernels)
    {
        using var trainer = new Trainer(Config(o, method, fusedKernels));
        long parameters = trainer.Model.parameters().Sum(p => p.numel());
        var losses = new List<double>();
        var times = new List<double>();
        for (int step = 0; step < o.Warmup + o.Steps; step++)
        {
            TrainingBench.Synchronize(trainer.Device);
            var clock = Stopwatch.StartNew();
            var (loss, _, _, _) = trainer.Step(step, statistics: false); // reads the loss: the step has finished on the GPU
            TrainingBench.Synchronize(trainer.Device);
            if (step >= o.Warmup) times.Add(clock.Elapsed.TotalMilliseconds);
            losses.Add(loss);
        }
        profile?.Profile(trainer, o.Warmup + o.Steps, o.ProfiledSteps);
        double ms = TrainingBench.Median(times), tokensPerSecond = o.Batch * o.Sequence / ms * 1000, flops = FlopsPerToken(o, parameters);
        bool gpu = trainer.Device.type == DeviceType.CUDA;
        string mode = $"{o.Precision}, oec.method = {JsonNamingPolicy.SnakeCaseLower.ConvertName(method.ToString())}, kernels {(trainer.Model.Kernels is null ? "off" : "on")}";
        return new GpuBenchRow("oecrun", mode, parameters, flops, ms, tokensPerSecond,
            gpu ? flops * tokensPerSecond / (o.PeakTflops * 1e12) : null, gpu ? Collectives.NcclCommunicator.DeviceMemoryUsed(trainer.Device.index) : null, null, losses);
    }

    static GpuBenchRow PyTorch(GpuBenchOptions o, string mode, TextWriter console)
    {
        if (!File.Exists(ReferenceScript)) throw new FileNotFoundException($"the PyTorch reference {ReferenceScript} is missing from this oecrun");
        string[] args =
        [
            ReferenceScript, "--mode", mode, "--precision", o.Precision, "--device", o.Device, "--d-model", $"{o.Dim}", "--n-layer", $"{o.Layers}",
            "--n-head", $"{o.Heads}", "--vocab", $"{o.Vocab}", "--seq", $"{o.Sequence}", "--batch", $"{o.Batch}", "--steps", $"{o.Steps}",
            "--warmup", $"{o.Warmup}", "--lr", $"{o.LearningRate}", "--peak-tflops", $"{o.PeakTflops}",
            .. o.Device == "cuda" ? ["--fused"] : Array.Empty<string>(), // PyTorch at its fastest eager optimizer (CUDA only in older torch)
        ];
        string what = $"{o.Python} {string.Join(' ', args.Select(a => a == ReferenceScript ? "gpt_reference.py" : a))}";
        string line = Python.Run(o.Python, args, PythonTimeout, what).Output.Trim();
        if (line.Length == 0) throw new InvalidOperationException($"{what} printed no result line");
        console.WriteLine($"ran: {what}");
        using var json = JsonDocument.Parse(line);
        var r = json.RootElement;
        double? Number(string name) => r.GetProperty(name).ValueKind == JsonValueKind.Null ? null : r.GetProperty(name).GetDouble();
        long? Bytes(string name) => Number(name) is double d ? (long)d : null;
        string optimizer = r.GetProperty("fused").GetBoolean() ? ", fused AdamW" : "";
        return new GpuBenchRow($"pytorch {r.GetProperty("torch_version").GetString()}", $"{mode}, {o.Precision}{(o.Precision == "bf16" ? " autocast" : "")}{optimizer}",
            r.GetProperty("parameters").GetInt64(), r.GetProperty("flops_per_token").GetDouble(), r.GetProperty("median_ms").GetDouble(),
            r.GetProperty("tokens_per_s").GetDouble(), Number("mfu"), Bytes("device_used_bytes"), Bytes("peak_allocated_bytes"),
            r.GetProperty("losses").EnumerateArray().Select(l => l.GetDouble()).ToList());
    }
}
