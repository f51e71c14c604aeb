// One pod's (or machine's) ranks: N rank processes side by side, like torchrun's --nproc-per-node, each on its own GPU.
using System.Diagnostics;
using System.Runtime.InteropServices;
using Job;

namespace Rank.Distributed;

/// <summary>
/// Starts N `oecrun rank` processes with LOCAL_RANK i, LOCAL_WORLD_SIZE N and RANK = index x N + i, where index is
/// JOB_COMPLETION_INDEX (set by Kubernetes in an Indexed Job's pods) or OEC_POD_INDEX; rank i takes GPU i. Their output
/// is streamed with a [rank R] prefix. When one exits with an error the others are given the coordinator's heartbeat
/// timeout to hear the end of their generation, then killed. The exit code is the worst of theirs (2 before 1 before
/// 5 before 4), so that the pod's restart policy sees why. SIGTERM and Ctrl+C reach every rank as SIGINT: each votes
/// to stop at a checkpoint.
/// </summary>
public static partial class PodRanks
{
    const int SigInt = 2;
    static readonly TimeSpan Grace = TimeSpan.FromSeconds(30);

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);

    public static int Run(int localRanks, string? coordinator, TextWriter console)
    {
        if (localRanks < 1 || localRanks > 64) throw new ArgumentException($"--local-ranks {localRanks}: must be in [1, 64]");
        string? indexText = Environment.GetEnvironmentVariable("JOB_COMPLETION_INDEX") ?? Environment.GetEnvironmentVariable("OEC_POD_INDEX");
        if (indexText is null) throw new ArgumentException($"--local-ranks {localRanks}: JOB_COMPLETION_INDEX (an Indexed Job's pod index) or OEC_POD_INDEX must say which pod this is");
        if (!int.TryParse(indexText, out int index) || index < 0) throw new ArgumentException($"JOB_COMPLETION_INDEX / OEC_POD_INDEX = '{indexText}': not a pod index >= 0");

        var command = coordinator is null ? Launch.SelfCommand("rank") : Launch.SelfCommand("rank", "--coordinator", coordinator);
        var ranks = new List<(int Rank, Process Process)>();
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Forward);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Forward);
        for (int local = 0; local < localRanks; local++)
        {
            int rank = index * localRanks + local;
            var info = new ProcessStartInfo(command.FileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in command.Arguments) info.ArgumentList.Add(a);
            info.Environment["RANK"] = rank.ToString();
            info.Environment["LOCAL_RANK"] = local.ToString();
            info.Environment["LOCAL_WORLD_SIZE"] = localRanks.ToString();
            var process = new Process { StartInfo = info };
            process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (console) console.WriteLine($"[rank {rank}] {e.Data}"); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (console) console.WriteLine($"[rank {rank}] {e.Data}"); };
            process.Start();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            lock (ranks) ranks.Add((rank, process));
        }
        lock (console) console.WriteLine($"pod {index}: started ranks {index * localRanks}..{index * localRanks + localRanks - 1} (LOCAL_RANK 0..{localRanks - 1})");

        var exited = ranks.Select(r => r.Process.WaitForExitAsync()).ToArray();
        int first = Task.WaitAny(exited);
        if (ranks[first].Process.ExitCode != 0 && !Task.WaitAll(exited, Grace))
            foreach (var (rank, p) in ranks.Where(r => !r.Process.HasExited))
            {
                lock (console) console.WriteLine($"pod {index}: rank {rank} still runs {Grace.TotalSeconds:0} s after rank {ranks[first].Rank} exited with {ranks[first].Process.ExitCode}; killing it");
                try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            }
        Task.WaitAll(exited);
        var codes = ranks.Select(r => r.Process.ExitCode).ToList();
        foreach (var (_, p) in ranks) p.Dispose();
        return codes.Contains(2) ? 2 : codes.Contains(1) ? 1 : codes.Contains(ExitCodes.LostCoordinator) ? ExitCodes.LostCoordinator
            : codes.FirstOrDefault(c => c != 0);

        void Forward(PosixSignalContext signal)
        {
            signal.Cancel = true; // the ranks decide: they stop at a checkpoint, then this process returns
            lock (ranks)
                foreach (var (_, p) in ranks.Where(r => !r.Process.HasExited)) Kill(p.Id, SigInt);
        }
    }
}
