// The command line: train, sweep, coordinator, rank, k8s, prepare, report, torch-info, bench, bench-gpu, bench-vocab, bench-collectives, bench-coordinator. Each command only parses, composes and reports.
using System.CommandLine;
using Rank.Configuration;
using Rank.Distributed;
using Rank.Kubernetes;
using Rank.Reporting;
using Rank.Sweep;

namespace Rank;

public static class Cli
{
    public static RootCommand Build()
    {
        var root = new RootCommand("Output-embedding-centering GPT training: a coordinator and data-parallel ranks.");
        root.Subcommands.Add(TrainCommand());
        root.Subcommands.Add(SweepCommand());
        root.Subcommands.Add(CoordinatorCommand());
        root.Subcommands.Add(RankCommand());
        root.Subcommands.Add(KubernetesCommand());
        root.Subcommands.Add(PrepareCommand());
        root.Subcommands.Add(ReportCommand());
        root.Subcommands.Add(TorchInfoCommand());
        root.Subcommands.Add(BenchCommand());
        root.Subcommands.Add(BenchGpuCommand());
        root.Subcommands.Add(BenchVocabCommand());
        root.Subcommands.Add(BenchCollectivesCommand());
        root.Subcommands.Add(BenchCoordinatorCommand());
        return root;
    }

    static Option<string?> ConfigOption() => new("--config") { Description = "JSON configuration file (sections model, oec, data, train, run, job)." };

    static Argument<string[]> OverridesArgument() => new("overrides")
    {
        Description = "Settings over the file, as section.key=value, e.g. train.learning_rate=1e-3 oec.method=mu_loss job.world_size=4.",
        Arity = ArgumentArity.ZeroOrMore,
    };

    static Command TrainCommand()
    {
        var config = ConfigOption();
        var overrides = OverridesArgument();
        var command = new Command("train", "Run a whole job on this machine: the coordinator and job.world_size rank processes (2 by default, on the CPU). " +
                                           "Without arguments, the embedded default (tiny model, synthetic corpus, mu-centering). Ctrl+C stops at a checkpoint.")
        {
            config, overrides,
        };
        command.SetAction(parse => Guard(() =>
        {
            var run = RunConfig.Load(parse.GetValue(config), parse.GetValue(overrides) ?? []);
            Console.WriteLine($"resolved configuration:\n{run.ToJson()}");
            using var interrupt = new CancellationTokenSource();
            int interrupts = 0;
            Console.CancelKeyPress += (_, e) =>
            {
                if (++interrupts > 1) return; // the second Ctrl+C ends the launcher; ranks then lose the coordinator and exit
                e.Cancel = true;
                interrupt.Cancel();
            };
            return Launch.Local(run, Launch.SelfRankCommand(), Console.Out, interrupt.Token).GetAwaiter().GetResult();
        }));
        return command;
    }

    static Command SweepCommand()
    {
        var config = ConfigOption();
        var overrides = OverridesArgument();
        string rates = string.Join(",", SweepOptions.PaperLearningRates.Select(SweepOptions.FormatRate));
        var methods = new Option<string>("--methods") { Description = "Comma-separated OEC methods.", DefaultValueFactory = _ => "none,z_loss,soft_cap,mu_loss,mu_centering" };
        var tying = new Option<string>("--tying") { Description = "Comma-separated model.weight_tying settings.", DefaultValueFactory = _ => "false,true" };
        var learningRates = new Option<string>("--learning-rates") { Description = "Comma-separated peak learning rates (default: the paper's grid).", DefaultValueFactory = _ => rates };
        var presets = new Option<string>("--presets") { Description = "Comma-separated model presets.", DefaultValueFactory = _ => "tiny" };
        var ranks = new Option<int>("--ranks") { Description = "job.world_size of every cell.", DefaultValueFactory = _ => 1 };
        var parallel = new Option<int?>("--parallel") { Description = "Cells run side by side (default: cores / (ranks x train.threads), at least 1; 1 with train.device = cuda)." };
        var output = new Option<string?>("--out") { Description = "The sweep's directory: sweep.json, cells/<cell>/, results.md, the charts. Run again with the same --out to resume (default: runs/sweep-<UTC date-time>)." };
        var command = new Command("sweep", "Reproduce the paper's learning-rate sweep: every method x weight tying x learning rate x preset is an ordinary training job " +
                                           "(divergence.action = warn) in <out>/cells/<cell>/, sharing the base configuration (the CPU-sized default under --config and the overrides); " +
                                           "then results.md (final validation loss, LRS, step-time overhead) and charts against the learning rate. Ctrl+C stops; the same command resumes.")
        {
            config, overrides, methods, tying, learningRates, presets, ranks, parallel, output,
        };
        command.SetAction(parse => Guard(() =>
        {
            var options = new SweepOptions
            {
                Methods = SweepOptions.ParseMethods(parse.GetValue(methods)!), Tying = SweepOptions.ParseTying(parse.GetValue(tying)!),
                LearningRates = SweepOptions.ParseRates(parse.GetValue(learningRates)!), Presets = SweepOptions.ParsePresets(parse.GetValue(presets)!),
                Ranks = parse.GetValue(ranks), Parallel = parse.GetValue(parallel),
                OutDir = parse.GetValue(output) ?? $"runs/sweep-{DateTime.UtcNow:yyyyMMdd-HHmmss}",
                ConfigFile = parse.GetValue(config), Overrides = parse.GetValue(overrides) ?? [],
            };
            using var interrupt = new CancellationTokenSource();
            int interrupts = 0;
            Console.CancelKeyPress += (_, e) =>
            {
                if (++interrupts > 1) return; // the second Ctrl+C ends the sweep at once; its half-done cells start afresh next time
                e.Cancel = true;
                interrupt.Cancel();
            };
            return SweepRun.Run(options, Launch.SelfRankCommand(), Console.Out, interrupt.Token).GetAwaiter().GetResult();
        }));
        return command;
    }

    static Command CoordinatorCommand()
    {
        var config = ConfigOption();
        var overrides = OverridesArgument();
        var port = new Option<int>("--port") { Description = "Port to listen on for the ranks (gRPC, all interfaces).", DefaultValueFactory = _ => 29400 };
        var metricsPort = new Option<int>("--metrics-port") { Description = "Port of the Prometheus endpoint /metrics and the live page /live (HTTP/1.1, all interfaces).", DefaultValueFactory = _ => 9400 };
        var linger = new Option<bool>("--linger") { Description = "Keep serving health, /metrics and the live page after the job ended, until SIGTERM (for a Kubernetes Deployment)." };
        var command = new Command("coordinator", "Run the coordinator alone, for ranks started elsewhere (`oecrun rank`), e.g. on Kubernetes. " +
                                                 "Needs OEC_JOB_TOKEN; the job id is job.id, else OEC_JOB_ID.")
        {
            config, overrides, port, metricsPort, linger,
        };
        command.SetAction(parse => Guard(() =>
        {
            var run = RunConfig.Load(parse.GetValue(config), parse.GetValue(overrides) ?? []);
            return Launch.Cluster(run, parse.GetValue(port), parse.GetValue(metricsPort), Console.Out, parse.GetValue(linger)).GetAwaiter().GetResult();
        }));
        return command;
    }

    static Command RankCommand()
    {
        var coordinator = new Option<string?>("--coordinator") { Description = "The coordinator's address, http://host:port (default: OEC_COORDINATOR)." };
        var localRanks = new Option<int?>("--local-ranks")
        {
            Description = "Run this many ranks side by side (one pod's or machine's), rank i on GPU i, RANK = JOB_COMPLETION_INDEX (or OEC_POD_INDEX) x N + i.",
        };
        var command = new Command("rank", "Run one rank: register with the coordinator, train its share, report. " +
                                          "Reads OEC_JOB_ID, OEC_JOB_TOKEN and torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE.")
        {
            coordinator, localRanks,
        };
        command.SetAction(parse => Guard(() => parse.GetValue(localRanks) is int n
            ? PodRanks.Run(n, parse.GetValue(coordinator), Console.Out)
            : RankProcess.Run(parse.GetValue(coordinator), Console.Out)));
        return command;
    }

    static Command KubernetesCommand()
    {
        var d = new ManifestOptions();
        var name = new Option<string>("--name") { Description = $"The job's name: prefix of every object, job.id, run.out_dir = /shared/runs/NAME (a DNS-1035 label, at most {ManifestOptions.MaxNameLength} characters).", Required = true };
        var image = new Option<string>("--image") { Description = "The oecrun image of the coordinator and the ranks (deploy/docker).", Required = true };
        var ranks = new Option<int>("--ranks") { Description = "World size: ranks in the job (sets job.world_size).", Required = true };
        var ranksPerPod = new Option<int>("--ranks-per-pod") { Description = "Rank processes per pod; must divide --ranks.", DefaultValueFactory = _ => d.RanksPerPod };
        var gpusPerRank = new Option<int>("--gpus-per-rank") { Description = "GPUs per rank: 0 = a CPU job (job.backend = tcp); 1 = a GPU job (job.backend = nccl, nvidia.com/gpu = ranks per pod).", DefaultValueFactory = _ => d.GpusPerRank };
        var config = new Option<string?>("--config") { Description = "The run configuration (JSON); validated now. job.world_size, job.id, job.backend, job.resume = true and run.out_dir are set by this command." };
        var overrides = OverridesArgument();
        var ns = new Option<string?>("--namespace") { Description = "Namespace of every object (default: the one kubectl applies to)." };
        var pvc = new Option<string?>("--pvc") { Description = "An existing ReadWriteMany claim to mount at /shared (default: render a claim NAME-shared)." };
        var storageClass = new Option<string?>("--storage-class") { Description = "Storage class of the rendered claim; it must offer ReadWriteMany (default: the cluster's default class)." };
        var storage = new Option<string>("--storage") { Description = "Size of the rendered claim.", DefaultValueFactory = _ => d.Storage };
        var cpu = new Option<string>("--cpu") { Description = "CPU of each rank pod (request = limit).", DefaultValueFactory = _ => d.Cpu };
        var memory = new Option<string>("--memory") { Description = "Memory of each rank pod (request = limit; /dev/shm counts against it).", DefaultValueFactory = _ => d.Memory };
        var ncclIfname = new Option<string>("--nccl-socket-ifname") { Description = "NCCL_SOCKET_IFNAME of GPU jobs: the interface NCCL's bootstrap and socket transport use.", DefaultValueFactory = _ => d.NcclSocketIfname };
        var ncclIb = new Option<bool>("--nccl-ib-disable") { Description = "NCCL_IB_DISABLE=1 in GPU jobs: never use InfiniBand/RoCE (default 0: NCCL uses it where the pod has it)." };
        var ncclDebug = new Option<string>("--nccl-debug") { Description = "NCCL_DEBUG of GPU jobs: VERSION, WARN, INFO or TRACE.", DefaultValueFactory = _ => d.NcclDebug };
        var port = new Option<int>("--port") { Description = "The coordinator's gRPC port.", DefaultValueFactory = _ => d.Port };
        var metricsPort = new Option<int>("--metrics-port") { Description = "The coordinator's /metrics and /live port.", DefaultValueFactory = _ => d.MetricsPort };
        var tokenSecret = new Option<string?>("--token-secret") { Description = "An existing Secret with the job token under the key 'token' (default: render a Secret NAME-token with a fresh random token)." };
        var output = new Option<string?>("--out") { Description = "Directory for one YAML file per object and a kustomization.yaml (default: one stream to stdout)." };
        var command = new Command("k8s", "Render the Kubernetes manifests of a job: the token Secret, the configuration, the coordinator (Deployment, Service), " +
                                         "the ranks (Indexed Job, headless Service), the shared claim, a PodMonitor and the Grafana dashboard.")
        {
            name, image, ranks, ranksPerPod, gpusPerRank, config, overrides, ns, pvc, storageClass, storage, cpu, memory,
            ncclIfname, ncclIb, ncclDebug, port, metricsPort, tokenSecret, output,
        };
        command.SetAction(parse => Guard(() =>
        {
            var options = new ManifestOptions
            {
                Name = parse.GetValue(name)!, Image = parse.GetValue(image)!, Ranks = parse.GetValue(ranks), RanksPerPod = parse.GetValue(ranksPerPod),
                GpusPerRank = parse.GetValue(gpusPerRank), ConfigFile = parse.GetValue(config), Overrides = parse.GetValue(overrides) ?? [],
                Namespace = parse.GetValue(ns), Pvc = parse.GetValue(pvc), StorageClass = parse.GetValue(storageClass), Storage = parse.GetValue(storage)!,
                Cpu = parse.GetValue(cpu)!, Memory = parse.GetValue(memory)!, NcclSocketIfname = parse.GetValue(ncclIfname)!,
                NcclIbDisable = parse.GetValue(ncclIb), NcclDebug = parse.GetValue(ncclDebug)!, Port = parse.GetValue(port),
                MetricsPort = parse.GetValue(metricsPort), TokenSecret = parse.GetValue(tokenSecret),
            };
            var manifests = JobManifests.Build(options);
            if (parse.GetValue(output) is not string dir)
            {
                Console.Write(ManifestFiles.ToYaml(manifests));
                return 0;
            }
            // The command line without the command and --out, so that the directory records how to render it again.
            var tokens = parse.Tokens.Select(t => t.Value).ToList();
            if (tokens.FirstOrDefault() == command.Name) tokens.RemoveAt(0);
            int at = tokens.IndexOf("--out");
            if (at >= 0) tokens.RemoveRange(at, Math.Min(2, tokens.Count - at));
            ManifestFiles.Write(manifests, dir, ManifestFiles.Quote(tokens));
            Console.WriteLine($"wrote {manifests.Count} objects and kustomization.yaml to {dir}");
            return 0;
        }));
        return command;
    }

    static Command PrepareCommand()
    {
        var inputs = new Argument<string[]>("inputs") { Description = "UTF-8 text files; documents are separated by blank lines.", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--output") { Description = "Directory for the shards.", Required = true };
        var name = new Option<string>("--name") { Description = "Shard name prefix.", DefaultValueFactory = _ => "data" };
        var valFraction = new Option<double>("--val-fraction") { Description = "Fraction of documents for validation.", DefaultValueFactory = _ => 0.05 };
        var shardTokens = new Option<long>("--shard-tokens") { Description = "Maximum tokens per shard.", DefaultValueFactory = _ => 100_000_000 };
        var command = new Command("prepare", "Tokenise text with the GPT-2 BPE into llm.c-format train and validation shards.")
        {
            inputs, output, name, valFraction, shardTokens,
        };
        command.SetAction(parse => Guard(() =>
        {
            Data.Prepare.Run(new Data.PrepareOptions(parse.GetValue(inputs)!, parse.GetValue(output)!, parse.GetValue(name)!,
                parse.GetValue(valFraction), parse.GetValue(shardTokens)), Console.Out);
            return 0;
        }));
        return command;
    }

    static Command ReportCommand()
    {
        var runs = new Argument<string[]>("runs") { Description = "Run directories holding metrics.jsonl, or metrics.jsonl files; each run is named after its directory.", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string?>("--out") { Description = "Folder for the PNGs (default: the first run's directory)." };
        var width = new Option<int>("--width") { Description = "Width of each PNG in pixels.", DefaultValueFactory = _ => 1200 };
        var height = new Option<int>("--height") { Description = "Height of each PNG in pixels.", DefaultValueFactory = _ => 800 };
        var command = new Command("report", "Plot runs' metrics logs, every run on each chart: loss.png (train and val loss), mu_norm.png (||mu||), " +
                                            "logits.png (mean logit, max |logit|). Non-finite values are left out and counted.")
        {
            runs, output, width, height,
        };
        command.SetAction(parse => Guard(() =>
        {
            foreach (string path in MetricsReport.Write(parse.GetValue(runs)!, parse.GetValue(output), parse.GetValue(width), parse.GetValue(height), Console.Out))
                Console.WriteLine($"wrote {path}");
            return 0;
        }));
        return command;
    }

    static Command TorchInfoCommand()
    {
        var command = new Command("torch-info", $"Load libtorch as training would (the bundled copy, or {ExternalLibTorch.Variable}) and print where it came from, " +
                                                "its version, the native libraries mapped into this process, a CPU matmul and whether CUDA is available.");
        command.SetAction(parse => Guard(() =>
        {
            TorchRuntime.EnsureLoaded();
            var source = TorchRuntime.Source!;
            Console.WriteLine($"TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}");
            Console.WriteLine(source.Directory is null ? $"libtorch: bundled with oecrun ({ExternalLibTorch.BundledLibTorch()})"
                : $"libtorch: {source.Directory} ({ExternalLibTorch.Variable}={source.Setting})");
            Console.WriteLine($"libtorch version: {(source.Version is null ? "unknown" : $"{source.Version} ({source.VersionFile})")}");
            foreach (string library in ExternalLibTorch.MappedLibraries()) Console.WriteLine($"mapped: {library}");
            using var a = TorchSharp.torch.tensor(new float[] { 1, 2, 3, 4 }).view(2, 2);
            using var product = a.matmul(a);
            Console.WriteLine($"cpu matmul: [[1,2],[3,4]]^2 = [{string.Join(",", product.data<float>().ToArray())}]");
            var (gpus, cudaError) = Training.ComputeDevice.Probe();
            Console.WriteLine($"cuda: {(gpus > 0 ? $"available, {gpus} device(s)" : $"not available{(cudaError is null ? "" : $" ({cudaError})")}")}");
            return 0;
        }));
        return command;
    }

    static Command BenchCommand()
    {
        var steps = new Option<int>("--steps") { Description = "Timed steps per measurement (after 3 warmup steps).", DefaultValueFactory = _ => 10 };
        var presets = new Option<string>("--presets") { Description = "Comma-separated model presets.", DefaultValueFactory = _ => "tiny,16M" };
        var command = new Command("bench", "Measure tokens/s of the training step per preset and the step-time overhead of each OEC method.")
        {
            steps, presets,
        };
        command.SetAction(parse => Guard(() =>
        {
            TorchRuntime.EnsureLoaded();
            Bench.Run(parse.GetValue(presets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                parse.GetValue(steps), Console.Out);
            return 0;
        }));
        return command;
    }

    static Command BenchGpuCommand()
    {
        var d = new GpuBenchOptions();
        Option<int> Int(string name, string description, int value) => new(name) { Description = description, DefaultValueFactory = _ => value };
        var steps = Int("--steps", "Timed steps per row, each synchronised.", d.Steps);
        var warmup = Int("--warmup", "Untimed steps first (torch.compile compiles there).", d.Warmup);
        var batch = Int("--batch", "Sequences per step.", d.Batch);
        var sequence = Int("--seq", "Tokens per sequence.", d.Sequence);
        var dim = Int("--d-model", "Model width.", d.Dim);
        var layers = Int("--n-layer", "Transformer blocks.", d.Layers);
        var heads = Int("--n-head", "Attention heads.", d.Heads);
        var vocab = Int("--vocab", "Vocabulary (a multiple of 64, as the model pads it).", d.Vocab);
        var precision = new Option<string>("--precision") { Description = "bf16 (oecrun: train.precision=bf16; PyTorch: autocast) or fp32 (TF32 matmuls).", DefaultValueFactory = _ => d.Precision };
        var device = new Option<string>("--device") { Description = "cuda (GPU 0), or cpu for a small smoke run.", DefaultValueFactory = _ => d.Device };
        var modes = new Option<string>("--modes") { Description = "Comma-separated PyTorch modes: eager, compile.", DefaultValueFactory = _ => string.Join(',', d.Modes) };
        var python = new Option<string>("--python") { Description = "The python with torch.", DefaultValueFactory = _ => d.Python };
        var peak = new Option<double>("--peak-tflops") { Description = "The GPU's dense bf16 peak in TFLOP/s, for MFU.", DefaultValueFactory = _ => d.PeakTflops };
        var command = new Command("bench-gpu", "Train the same GPT for the same steps in PyTorch (each mode in its own process) and in oecrun on one GPU, " +
                                               "and print tokens/s, MFU, device memory and the ratio to PyTorch eager. Needs OEC_LIBTORCH with CUDA and a python with torch.")
        {
            steps, warmup, batch, sequence, dim, layers, heads, vocab, precision, device, modes, python, peak,
        };
        command.SetAction(parse => Guard(() =>
        {
            var o = new GpuBenchOptions
            {
                Steps = parse.GetValue(steps), Warmup = parse.GetValue(warmup), Batch = parse.GetValue(batch), Sequence = parse.GetValue(sequence),
                Dim = parse.GetValue(dim), Layers = parse.GetValue(layers), Heads = parse.GetValue(heads), Vocab = parse.GetValue(vocab),
                Precision = parse.GetValue(precision)!, Device = parse.GetValue(device)!, Python = parse.GetValue(python)!, PeakTflops = parse.GetValue(peak),
                Modes = parse.GetValue(modes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            };
            if (o.Precision is not ("bf16" or "fp32")) throw new ArgumentException($"--precision {o.Precision}: expected bf16 or fp32");
            if (o.Modes.FirstOrDefault(m => m is not ("eager" or "compile")) is string bad) throw new ArgumentException($"--modes: '{bad}': expected eager or compile");
            if (o.Steps < 1 || o.Warmup < 0) throw new ArgumentException($"--steps {o.Steps} --warmup {o.Warmup}: expected at least 1 timed step and no negative warmup");
            TorchRuntime.EnsureLoaded();
            var failures = new List<string>();
            GpuBench.Run(o, Console.Out, failures);
            return failures.Count == 0 ? 0 : 1;
        }));
        return command;
    }

    static Command BenchVocabCommand()
    {
        var steps = new Option<int>("--steps") { Description = "Timed steps per method and tp (after 2 warmup steps).", DefaultValueFactory = _ => 10 };
        var vocab = new Option<int>("--vocab") { Description = "Vocabulary size of the synthetic corpus (padded to a multiple of 64 x every tp).", DefaultValueFactory = _ => 32768 };
        var parts = new Option<string>("--parts") { Description = "Comma-separated vocabulary-parallel sizes tp (ranks are threads of this process).", DefaultValueFactory = _ => "1,2,4" };
        var command = new Command("bench-vocab", "Measure the vocabulary-sharded head per tp: head parameter and optimizer-state memory per rank, " +
                                                 "step time, and the overhead of mu-loss and mu-centering against none.")
        {
            steps, vocab, parts,
        };
        command.SetAction(parse => Guard(() =>
        {
            TorchRuntime.EnsureLoaded();
            var tps = parse.GetValue(parts)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(p => int.TryParse(p, out int tp) ? tp : throw new ArgumentException($"--parts: '{p}' is not a number")).ToArray();
            return VocabBench.Run(tps, parse.GetValue(steps), parse.GetValue(vocab), Console.Out);
        }));
        return command;
    }

    static Command BenchCollectivesCommand()
    {
        var worldSizes = new Option<string>("--world-sizes") { Description = "Comma-separated numbers of ranks.", DefaultValueFactory = _ => "2,4" };
        var maxMegabytes = new Option<int>("--max-mb") { Description = "Largest message in MB; sizes go from 1 KB up by factors of 4.", DefaultValueFactory = _ => 256 };
        var command = new Command("bench-collectives", "Measure the TCP ring all-reduce (algbw, busbw) next to raw TCP loopback throughput.")
        {
            worldSizes, maxMegabytes,
        };
        command.SetAction(parse => Guard(() =>
        {
            TorchRuntime.EnsureLoaded();
            var sizes = new List<long>();
            for (long bytes = 1024; bytes <= (long)parse.GetValue(maxMegabytes) << 20; bytes *= 4) sizes.Add(bytes);
            Collectives.CollectiveBench.Run(parse.GetValue(worldSizes)!.Split(',').Select(int.Parse).ToArray(), sizes, Console.Out);
            return 0;
        }));
        return command;
    }

    static Command BenchCoordinatorCommand()
    {
        var ranks = new Option<int>("--ranks") { Description = "Simulated ranks that register and heartbeat once a second.", DefaultValueFactory = _ => 1024 };
        var seconds = new Option<double>("--seconds") { Description = "Steady heartbeat window in seconds (after 5 s of warm-up).", DefaultValueFactory = _ => 30 };
        var port = new Option<int>("--port") { Description = "The coordinator's port; 0 picks a free one.", DefaultValueFactory = _ => 0 };
        var command = new Command("bench-coordinator", "Measure a coordinator process under simulated ranks: registration time, heartbeat latency, its CPU and memory.")
        {
            ranks, seconds, port,
        };
        command.SetAction(parse => Guard(() => CoordinatorBench.Run(parse.GetValue(ranks), parse.GetValue(seconds), Console.Out, parse.GetValue(port))));
        return command;
    }

    /// <summary>Bad settings and bad data end the program with one clear line and exit code 2 (OEC_TRACE=1 adds the stack).</summary>
    static int Guard(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or Data.DataFormatException or IOException)
        {
            Console.Error.WriteLine(Environment.GetEnvironmentVariable("OEC_TRACE") == "1" ? $"error: {e}" : $"error: {e.Message}");
            return 2;
        }
    }
}
