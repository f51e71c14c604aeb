// `oecrun kernels`: whether the fused CUDA kernels can run here, and with --check every kernel against its reference.
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
                                             "the largest errors against each kernel's tolerance; exit 1 on a miss, 2 where the kernels cannot run.");
        var device = new Option<int>("--device") { Description = "The CUDA device's index.", DefaultValueFactory = _ => 0 };
        var check = new Option<bool>("--check") { Description = "Compare every kernel with its reference." };
        var only = new Option<string?>("--only") { Description = $"With --check, one kernel family: {string.Join(", ", KernelChecks.All.Select(k => k.Name))}." };
        command.Options.Add(device);
        command.Options.Add(check);
        command.Options.Add(only);
        command.SetGuardedAction(parse =>
        {
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
