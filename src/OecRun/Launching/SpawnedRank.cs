// A rank process started by a launcher (LocalLauncher, PodRanks): its output streamed line by line under a
// [rank R] prefix, and killed with its children when it outlives a grace period.
using System.Diagnostics;

namespace OecRun.Launching;

public sealed class SpawnedRank : IDisposable
{
    SpawnedRank(int rank, Process process)
    {
        (Rank, Process) = (rank, process);
        Exited = process.WaitForExitAsync();
    }

    public int Rank { get; }
    public Process Process { get; }
    /// <summary>Completes when the process has exited.</summary>
    public Task Exited { get; }

    /// <summary>Starts <paramref name="command"/> with <paramref name="environment"/> added to this process's; every line
    /// of its stdout and stderr goes to <paramref name="echo"/> as "[rank R] line". Throws Win32Exception or
    /// InvalidOperationException when the program cannot start.</summary>
    public static SpawnedRank Start(ProcessCommand command, int rank, IReadOnlyDictionary<string, string> environment, Action<string> echo)
    {
        var info = new ProcessStartInfo(command.FileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in command.Arguments) info.ArgumentList.Add(a);
        // No debugger pipes or diagnostics socket in /tmp: a rank killed by a signal would leave them behind (three
        // files per process). Set DOTNET_EnableDiagnostics=1 in the environment to attach dotnet-trace or a debugger.
        info.Environment.TryAdd("DOTNET_EnableDiagnostics", "0");
        foreach (var (name, value) in environment) info.Environment[name] = value;
        var process = new Process { StartInfo = info };
        string prefix = $"[rank {rank}] ";
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) echo(prefix + e.Data); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) echo(prefix + e.Data); };
        try
        {
            process.Start();
        }
        catch
        {
            process.Dispose();
            throw;
        }
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return new SpawnedRank(rank, process);
    }

    /// <summary>Waits until every process has exited; those still running after <paramref name="grace"/> are killed with
    /// their children, each announced to <paramref name="killing"/> first.</summary>
    public static async Task ReapAsync(IReadOnlyList<SpawnedRank> ranks, TimeSpan grace, Action<SpawnedRank> killing)
    {
        var all = Task.WhenAll(ranks.Select(r => r.Exited));
        if (await Task.WhenAny(all, Task.Delay(grace)) != all)
            foreach (var r in ranks.Where(r => !r.Process.HasExited))
            {
                killing(r);
                try { r.Process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            }
        await all;
    }

    public void Dispose() => Process.Dispose();
}
