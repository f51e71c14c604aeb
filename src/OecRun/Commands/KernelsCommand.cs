// `oecrun kernels`: whether the fused CUDA kernels can run here, with --check every kernel against its reference, and
// with --compile every kernel compiled for an architecture without a GPU.
using System.CommandLine;
using System.Runtime.InteropServices;
using Job;
using Kernels;
using Rank;

namespace OecRun.Commands;

public static class KernelsCommand
{
    public static Command Create()
    {
        var command = new Command("kernels", "Report whether the fused CUDA kernels (train.fused_kernels) can run on this machine: the GPU's " +
                                             "architecture, NVRTC's version and the kernel cache. With --check, run every kernel and the TorchSharp " +
                                             "ops it replaces on random inputs of the model's shapes (fp32 and bf16, forward and backward) and print " +
                                             "the largest errors against each kernel's tolerance; exit 1 on a miss, 2 where the kernels cannot run. With --compile, " +
                                             "compile every kernel for the given architectures with NVRTC alone (no GPU needed) into the kernel " +
                                             "cache, for example while building an image, and print each kernel's registers and spills.");
        var device = new Option<int>("--device") { Description = "The CUDA device's index.", DefaultValueFactory = _ => 0 };
        var check = new Option<bool>("--check") { Description = "Compare every kernel with its reference." };
        var only = new Option<string?>("--only") { Description = $"With --check, one kernel family: {string.Join(", ", KernelChecks.All.Select(k => k.Name))}." };
        command.Options.Add(device);
        command.Options.Add(check);
        var compile = new Option<string?>("--compile") { Description = "Compute capabilities to compile for, without a GPU: e.g. 90 or 80,90." };
        command.Options.Add(only);
        command.Options.Add(compile);
        command.SetGuardedAction(parse =>
        {
            if (parse.GetValue(compile) is { } architectures) return Compile(architectures);
            TorchRuntime.EnsureLoaded();
            int index = parse.GetValue(device);
            var runtime = KernelRuntime.For(index, out string? why);
            if (runtime is null)
            {
                Console.Error.WriteLine($"kernels: the fused kernels cannot run on cuda:{index}: {why}");
                return ExitCodes.Refused;
            }
            Console.WriteLine($"kernels: cuda:{index}, sm_{runtime.Architecture.Major}{runtime.Architecture.Minor}, NVRTC {runtime.CompilerVersion.Major}.{runtime.CompilerVersion.Minor}, "
                              + $"cache {KernelCache.Default().Directory ?? "(none: compiled in every process)"}");
            Console.WriteLine($"sources: {string.Join(", ", KernelSources.Names().Where(n => n.EndsWith(".cu")))}");
            if (!parse.GetValue(check)) return ExitCodes.Success;
            return Check(runtime, parse.GetValue(only));
        });
        return command;
    }

    /// <summary>Compiles every source for each architecture of <paramref name="list"/> ("80,90") into the kernel cache.</summary>
    static int Compile(string list)
    {
        if (KernelCompiler.Unavailable() is { } why)
        {
            Console.Error.WriteLine($"kernels: cannot compile: {why}");
            return ExitCodes.Refused;
        }
        var supported = KernelCompiler.Architectures();
        var architectures = new List<int>();
        foreach (string item in list.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(item.StartsWith("sm_") ? item[3..] : item, out int architecture) || !supported.Contains(architecture))
            {
                Console.Error.WriteLine($"kernels: --compile '{item}': NVRTC {KernelCompiler.Version.Major}.{KernelCompiler.Version.Minor} compiles for {string.Join(", ", supported)}");
                return ExitCodes.Refused;
            }
            architectures.Add(architecture);
        }
        var cache = KernelCache.Default();
        Console.WriteLine($"kernels: NVRTC {KernelCompiler.Version.Major}.{KernelCompiler.Version.Minor}, cache {cache.Directory ?? "(none)"}");
        foreach (int architecture in architectures)
            foreach (string source in KernelSources.Names().Where(n => n.EndsWith(".cu")))
            {
                var target = (architecture / 10, architecture % 10);
                CompiledSource compiled;
                try { compiled = KernelCompiler.Compile(source, KernelSources.Read(source), target, report: true); }
                catch (KernelException e) // NVRTC's own failure (its log, a missing libnvrtc-builtins): one line, not a stack
                {
                    Console.Error.WriteLine($"kernels: {source} for sm_{architecture}: {e.Message}");
                    return ExitCodes.Failed;
                }
                cache.GetOrAdd(source, KernelCompiler.Key(source, target), () => compiled.Cubin);
                foreach (var kernel in compiled.Resources()) Console.WriteLine($"sm_{architecture} {kernel}");
            }
        return ExitCodes.Success;
    }

    /// <summary>Runs the checks of every family (or of <paramref name="only"/>), a line per comparison; a family that
    /// fails to compile or launch counts as a miss and the next still runs.</summary>
    static int Check(KernelRuntime runtime, string? only)
    {
        var families = KernelChecks.All.Where(k => only is null || k.Name == only).ToList();
        if (families.Count == 0)
        {
            Console.Error.WriteLine($"kernels: --only {only}: no such kernel family; there are {string.Join(", ", KernelChecks.All.Select(k => k.Name))}");
            return ExitCodes.Refused;
        }
        int checks = 0, misses = 0;
        foreach (var (name, run) in families)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                foreach (var result in run(runtime))
                {
                    checks++;
                    if (!result.Passed) misses++;
                    Console.WriteLine(result);
                }
                Console.WriteLine($"{name}: {clock.Elapsed.TotalSeconds:F1} s");
            }
            catch (Exception e) when (e is KernelException or ArgumentException or ExternalException)
            {
                misses++;
                Console.WriteLine($"{name,-22} FAILED: {e.Message}");
            }
        }
        Console.WriteLine($"kernels: {checks} comparisons, {misses} missed");
        return misses == 0 ? ExitCodes.Success : ExitCodes.Failed;
    }
}
