// One pod's (or machine's) ranks: N rank processes side by side, like torchrun's --nproc-per-node, each on its own GPU.
using System.Runtime.InteropServices;
using Job;
using Rank.Distributed;

namespace OecRun.Launching;

/// <summary>
/// Starts N `oecrun rank` processes with LOCAL_RANK i, LOCAL_WORLD_SIZE N and RANK = index x N + i, where index is
/// JOB_COMPLETION_INDEX (set by Kubernetes in an Indexed Job's pods), OEC_POD_INDEX, NODE_RANK or SLURM_NODEID
/// (<see cref="RankEnvironment.NodeIndex"/>); rank i takes GPU i. Their output
/// is streamed with a [rank R] prefix. When one exits with an error the others are given <see cref="GraceAfter"/> to
/// hear the end of their generation and finish, then killed. The exit code is the worst of theirs (Refused before
/// Failed before LostCoordinator before Restart), so that the pod's restart policy sees why. SIGTERM and Ctrl+C reach
/// every rank as SIGINT: each votes to stop at a checkpoint.
/// </summary>
public static partial class PodRanks
{
    const int SigInt = 2;
    /// <summary>How long the other ranks of a pod may run on once one exited with <paramref name="code"/>: as long as they
    /// need after a success (they finish too); 10 minutes after exit 4, when every rank heard the same order to restart
    /// and some may still write their part of a stop's checkpoint (rank 0 writes the model and optimizer, the others a
    /// few files; Kubernetes gives a signalled rank pod 600 s); 30 s after a failure, whose generation the coordinator
    /// ends within its heartbeat timeout.</summary>
    public static TimeSpan GraceAfter(int code) => code switch
    {
        ExitCodes.Success => Timeout.InfiniteTimeSpan,
        ExitCodes.Restart => TimeSpan.FromMinutes(10),
        _ => TimeSpan.FromSeconds(30),
    };
    /// <summary>The pod's exit code is the first of these that a rank exited with, else any other non-zero code.</summary>
    static readonly int[] WorstFirst = [ExitCodes.Refused, ExitCodes.Failed, ExitCodes.LostCoordinator];

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);

    public static int Run(int localRanks, string? coordinator, TextWriter console)
    {
        if (localRanks < 1 || localRanks > 64) throw new ArgumentException($"--local-ranks {localRanks}: must be in [1, 64]");
        int index = RankEnvironment.NodeIndex(RankEnvironment.Current())
                    ?? throw new ArgumentException($"--local-ranks {localRanks}: JOB_COMPLETION_INDEX (an Indexed Job's pod index), OEC_POD_INDEX, NODE_RANK or SLURM_NODEID must say which pod or machine this is");

        var command = coordinator is null ? Launch.SelfCommand("rank") : Launch.SelfCommand("rank", "--coordinator", coordinator);
        var ranks = new List<SpawnedRank>();
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Forward);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Forward);
        for (int local = 0; local < localRanks; local++)
        {
            var environment = new Dictionary<string, string>
            {
                ["RANK"] = (index * localRanks + local).ToString(), ["LOCAL_RANK"] = local.ToString(), ["LOCAL_WORLD_SIZE"] = localRanks.ToString(),
            };
            var spawned = SpawnedRank.Start(command, index * localRanks + local, environment, Echo);
            lock (ranks) ranks.Add(spawned);
        }
        Echo($"pod {index}: started ranks {index * localRanks}..{index * localRanks + localRanks - 1} (LOCAL_RANK 0..{localRanks - 1})");

        var first = ranks[Task.WaitAny(ranks.Select(r => r.Exited).ToArray())];
        int firstCode = first.Process.ExitCode;
        var grace = GraceAfter(firstCode);
        SpawnedRank.ReapAsync(ranks, grace,
            r => Echo($"pod {index}: rank {r.Rank} still runs {grace.TotalSeconds:0} s after rank {first.Rank} exited with {firstCode}; killing it")).GetAwaiter().GetResult();
        var codes = ranks.Select(r => r.Process.ExitCode).ToList();
        foreach (var r in ranks) r.Dispose();
        return WorstFirst.FirstOrDefault(codes.Contains, codes.FirstOrDefault(c => c != ExitCodes.Success));

        void Echo(string line)
        {
            lock (console) console.WriteLine(line);
        }

        void Forward(PosixSignalContext signal)
        {
            signal.Cancel = true; // the ranks decide: they stop at a checkpoint, then this process returns
            lock (ranks)
                foreach (var r in ranks.Where(r => !r.Process.HasExited)) Kill(r.Process.Id, SigInt);
        }
    }
}
