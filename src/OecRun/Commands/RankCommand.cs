// `oecrun rank`: one rank (or one pod's ranks side by side) that registers with the coordinator and trains its share.
using System.CommandLine;
using OecRun.Launching;
using Rank.Distributed;

namespace OecRun.Commands;

public static class RankCommand
{
    /// <summary>The command's options: the coordinator's address (null: from the environment, RankEnvironment) and local ranks (null: one).</summary>
    public sealed record Options(string? Coordinator = null, int? LocalRanks = null);

    public static Command Create()
    {
        var command = new Command("rank", "Run one rank: register with the coordinator, train its share, report. " +
                                          "Reads OEC_JOB_ID, OEC_JOB_TOKEN; torchrun's MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, " +
                                          "else Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST (README: Slurm).");
        var b = new OptionBinder<Options>(command, new Options());
        b.Add(new Option<string?>("--coordinator") { Description = "The coordinator's address, http://host:port (default: OEC_COORDINATOR, else http://MASTER_ADDR:MASTER_PORT, else the first host of SLURM_JOB_NODELIST)." },
            (o, v) => o with { Coordinator = v });
        b.Add(new Option<int?>("--local-ranks")
        {
            Description = "Run this many ranks side by side (one pod's or machine's), rank i on GPU i, RANK = JOB_COMPLETION_INDEX (or OEC_POD_INDEX, NODE_RANK, SLURM_NODEID) x N + i.",
        }, (o, v) => o with { LocalRanks = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            return o.LocalRanks is int n ? PodRanks.Run(n, o.Coordinator, Console.Out) : RankProcess.Run(o.Coordinator, Console.Out);
        });
        return command;
    }
}
