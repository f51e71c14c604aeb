// The options of `oecrun slurm`: what a job's sbatch script is made from. Defaults live here once; the CLI shows them.
using System.Text.RegularExpressions;
using Rank.Distributed;

namespace OecRun.Slurm;

public sealed partial record SbatchOptions
{
    /// <summary>The job's name: Slurm's --job-name, job.id and OEC_JOB_ID.</summary>
    public string Name { get; init; } = "";
    public int Nodes { get; init; }
    /// <summary>GPUs per node; 0 = a CPU job (train.device = cpu, job.backend = tcp), else one rank per GPU (cuda, nccl).</summary>
    public int GpusPerNode { get; init; }
    /// <summary>Ranks per node of a CPU job; null = 1 (a GPU job runs one per GPU).</summary>
    public int? RanksPerNode { get; init; }
    /// <summary>Slurm's --cpus-per-task; null = the partition's default.</summary>
    public int? CpusPerTask { get; init; }
    /// <summary>Slurm's time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS.</summary>
    public string Time { get; init; } = "01:00:00";
    public string? Partition { get; init; }
    public string? Account { get; init; }
    /// <summary>The coordinator's gRPC port on the first node (MASTER_PORT of the ranks).</summary>
    public int Port { get; init; } = RankEnvironment.DefaultPort;
    /// <summary>The coordinator's /metrics and /live port; 0 = any free port (its log says which).</summary>
    public int MetricsPort { get; init; } = 9400;
    /// <summary>The command that runs oecrun on the nodes, as words: a path to the published bundle's oecrun, or "dotnet /path/oecrun.dll".</summary>
    public string Oecrun { get; init; } = "oecrun";
    /// <summary>run.out_dir, on a filesystem every node shares; null = runs/{name} in the directory sbatch was run in.</summary>
    public string? RunDir { get; init; }
    /// <summary>The run configuration file (JSON), read by the coordinator on the first node; null = the defaults.</summary>
    public string? ConfigFile { get; init; }
    /// <summary>section.key=value settings over the file, as for `train`.</summary>
    public IReadOnlyList<string> Overrides { get; init; } = [];

    /// <summary>Rank tasks per node: Slurm's --ntasks-per-node.</summary>
    public int TasksPerNode => GpusPerNode > 0 ? GpusPerNode : RanksPerNode ?? 1;
    public int Ranks => Nodes * TasksPerNode;

    // Slurm's job names may hold more, but these need no quoting in #SBATCH lines, file names or job.id.
    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    private static partial Regex JobName();

    [GeneratedRegex(@"^(\d+-\d{1,2}(:\d{2}){0,2}|\d+(:\d{2}){0,2})$")]
    private static partial Regex SlurmTime();

    [GeneratedRegex("^[A-Za-z0-9._-]+$")]
    private static partial Regex SlurmWord();

    public void Validate()
    {
        if (!JobName().IsMatch(Name))
            throw new ArgumentException($"--name = '{Name}': must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");
        if (Nodes < 1) throw new ArgumentException($"--nodes = {Nodes}: must be at least 1");
        if (GpusPerNode < 0) throw new ArgumentException($"--gpus-per-node = {GpusPerNode}: must be 0 (a CPU job) or more");
        if (RanksPerNode is < 1) throw new ArgumentException($"--ranks-per-node = {RanksPerNode}: must be at least 1");
        if (GpusPerNode > 0 && RanksPerNode is int r && r != GpusPerNode)
            throw new ArgumentException($"--ranks-per-node = {RanksPerNode}: a GPU job runs one rank per GPU (--gpus-per-node = {GpusPerNode})");
        if (CpusPerTask is < 1) throw new ArgumentException($"--cpus-per-task = {CpusPerTask}: must be at least 1");
        if (!SlurmTime().IsMatch(Time))
            throw new ArgumentException($"--time = '{Time}': expected a Slurm time limit such as 90 (minutes), 04:00:00 or 2-00:00:00");
        foreach (var (option, value) in new[] { ("--partition", Partition), ("--account", Account) })
            if (value is not null && !SlurmWord().IsMatch(value)) throw new ArgumentException($"{option} = '{value}': expected letters, digits, '.', '_' or '-'");
        if (Port is < 1 or > 65535) throw new ArgumentException($"--port = {Port}: must be a port in [1, 65535] (the ranks need to know it)");
        if (MetricsPort is < 0 or > 65535 || MetricsPort == Port)
            throw new ArgumentException($"--metrics-port = {MetricsPort}: must be a port in [0, 65535] other than --port = {Port}");
        if (string.IsNullOrWhiteSpace(Oecrun)) throw new ArgumentException($"--oecrun = '{Oecrun}': must name the program on the nodes, e.g. /shared/oec/oecrun");
    }
}
