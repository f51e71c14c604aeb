// oecrun: launch a training job (coordinator and ranks), run one rank or the coordinator alone, prepare shards, plot metrics, benchmark.
using System.CommandLine;
using OecRun.Commands;

namespace OecRun;

public static class Program
{
    /// <summary>Every command of oecrun; each lives in Commands/ and only parses, composes and reports.</summary>
    public static RootCommand Root() => new("Output-embedding-centering GPT training: a coordinator and data-parallel ranks.")
    {
        TrainCommand.Create(), SweepCommand.Create(), CoordinatorCommand.Create(), RankCommand.Create(), KubernetesCommand.Create(), SlurmCommand.Create(),
        PrepareCommand.Create(), ReportCommand.Create(), TorchInfoCommand.Create(), KernelsCommand.Create(), BenchCommand.Create(), BenchGpuCommand.Create(),
        BenchVocabCommand.Create(), BenchCollectivesCommand.Create(), BenchCoordinatorCommand.Create(), PlanCommand.Create(),
    };

    public static int Main(string[] args) => Run(args);

    /// <summary>The command line run as Main runs it: a first word that is no command exits 2 with the list of commands.</summary>
    public static int Run(string[] args)
    {
        var root = Root();
        var parse = root.Parse(args);
        if (args.Length > 0 && !args[0].StartsWith('-') && parse.CommandResult.Command == root)
        {
            Console.Error.WriteLine($"error: unknown command '{args[0]}'; the commands are {string.Join(", ", root.Subcommands.Select(c => c.Name))} (oecrun --help says what each does)");
            return Job.ExitCodes.Refused;
        }
        return parse.Invoke();
    }
}
