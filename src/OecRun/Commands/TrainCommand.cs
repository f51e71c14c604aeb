// `oecrun train`: a whole job on this machine, the coordinator and job.world_size rank processes.
using System.CommandLine;
using OecRun.Launching;

namespace OecRun.Commands;

public static class TrainCommand
{
    public static Command Create()
    {
        var command = new Command("train", "Run a whole job on this machine: the coordinator and job.world_size rank processes (2 by default, on the CPU). " +
                                           "Without arguments, the embedded default (tiny model, synthetic corpus, mu-centering). Ctrl+C, SIGTERM or SIGHUP stops at a checkpoint.");
        var settings = CommandLine.RunSettings(command);
        command.SetGuardedAction(parse =>
        {
            var run = settings.Bind(parse).Load();
            CommandLine.OutputDirectory(run.Run.OutDir!, "run.out_dir");
            Rank.Configuration.MemoryBudget.Check(run, ranksHere: run.Job.WorldSize); // every rank runs here
            Console.WriteLine($"resolved configuration:\n{run.ToJson()}");
            using var interrupt = CommandLine.FirstInterrupt();
            return Launch.Local(run, Launch.SelfRankCommand(), Console.Out, interrupt.Token).GetAwaiter().GetResult();
        });
        return command;
    }
}
