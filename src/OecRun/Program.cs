// oecrun: launch a training job (coordinator and ranks), run one rank or the coordinator alone, prepare shards, plot metrics, benchmark.
using System.CommandLine;
using OecRun.Commands;

namespace OecRun;

public static class Program
{
    /// <summary>Every command of oecrun; each lives in Commands/ and only parses, composes and reports.</summary>
    public static RootCommand Root() => new("Output-embedding-centering GPT training: a coordinator and data-parallel ranks.")
    {
        TrainCommand.Create(), SweepCommand.Create(), CoordinatorCommand.Create(), RankCommand.Create(), KubernetesCommand.Create(),
        PrepareCommand.Create(), ReportCommand.Create(), TorchInfoCommand.Create(), BenchCommand.Create(), BenchGpuCommand.Create(),
        BenchVocabCommand.Create(), BenchCollectivesCommand.Create(), BenchCoordinatorCommand.Create(),
    };

    public static int Main(string[] args) => Root().Parse(args).Invoke();
}
