// A job's sbatch script: the coordinator on the allocation's first node, one `oecrun rank` task per GPU through srun.
using Job;
using OecRun.Kubernetes;
using Rank.Configuration;

namespace OecRun.Slurm;

public static class SbatchScript
{
    /// <summary>The script's second line: marks a file that a later rendering may replace.</summary>
    public const string Header = "# Rendered by `oecrun slurm`: render again rather than edit.";

    /// <summary>
    /// The run configuration the coordinator gets: the file and overrides, then the renderer's settings (world size, id,
    /// device and backend, run.out_dir, resume so that a requeued job continues), validated now rather than on the cluster.
    /// </summary>
    public static RunConfig Resolve(SbatchOptions o) => RunConfig.Load(o.ConfigFile, [.. o.Overrides, .. RenderedSettings(o)]);

    /// <summary>The whole script; <paramref name="renderedWith"/> is the command line that rendered it, recorded in it.</summary>
    public static string Render(SbatchOptions o, string renderedWith)
    {
        o.Validate();
        var run = Resolve(o);
        ParallelLayout.Of(run.Job).ReplicaBatch(run.Train.BatchSize); // fails at render time, not on the cluster
        return string.Join('\n', [.. Directives(o, renderedWith), "", .. Exports(o), "", .. Coordinator(o), "", .. Ranks(run.Job.MaxRestarts), ""]);
    }

    /// <summary>Writes the script to <paramref name="path"/> whole or not at all: into a sibling file, then renamed over it.</summary>
    public static void Write(string script, string path)
    {
        string target = Path.GetFullPath(path);
        if (Directory.Exists(target)) throw new IOException($"--out = '{path}': is a directory, expected the script's file name");
        string staging = $"{target}.tmp-{Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4))}";
        try
        {
            File.WriteAllText(staging, script);
            File.Move(staging, target, overwrite: true);
        }
        finally
        {
            File.Delete(staging);
        }
    }

    static string[] RenderedSettings(SbatchOptions o) =>
    [
        $"job.world_size={o.Ranks}", $"job.id={o.Name}", $"run.out_dir={o.RunDir ?? $"runs/{o.Name}"}", "job.resume=auto", .. JobManifests.DeviceSettings(o.GpusPerNode > 0),
    ];

    static IEnumerable<string> Directives(SbatchOptions o, string renderedWith)
    {
        yield return "#!/bin/bash";
        yield return Header;
        yield return $"# oecrun slurm {renderedWith}";
        yield return $"#SBATCH --job-name={o.Name}";
        yield return $"#SBATCH --nodes={o.Nodes}";
        yield return $"#SBATCH --ntasks-per-node={o.TasksPerNode}";
        if (o.GpusPerNode > 0) yield return $"#SBATCH --gpus-per-node={o.GpusPerNode}";
        if (o.CpusPerTask is int cpus) yield return $"#SBATCH --cpus-per-task={cpus}";
        yield return $"#SBATCH --time={o.Time}";
        if (o.Partition is not null) yield return $"#SBATCH --partition={o.Partition}";
        if (o.Account is not null) yield return $"#SBATCH --account={o.Account}";
        yield return $"#SBATCH --output={o.Name}-%j.out";
        yield return "set -euo pipefail";
    }

    static IEnumerable<string> Exports(SbatchOptions o)
    {
        yield return "# oecrun on every node (a shared filesystem, or the same path on each).";
        yield return $"oecrun=({ManifestFiles.Quote(o.Oecrun.Split(' ', StringSplitOptions.RemoveEmptyEntries))})";
        yield return $"export OEC_JOB_ID={o.Name}";
        yield return "# The token the ranks prove to the coordinator and to each other: 24 random bytes, fresh for each job unless set.";
        yield return "export OEC_JOB_TOKEN=\"${OEC_JOB_TOKEN:-$(od -An -N24 -tx1 /dev/urandom | tr -d ' \\n')}\"";
        yield return "# The ranks find the coordinator at the first host of SLURM_JOB_NODELIST, where sbatch runs this script, on MASTER_PORT;";
        yield return "# their rank, world size and GPU come from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID.";
        yield return $"export MASTER_PORT={o.Port}";
        if (o.CpusPerTask is int cpus)
        {
            yield return "# srun of Slurm 22.05 to 23.02 does not take --cpus-per-task from the allocation: each task would get one core.";
            yield return $"export SRUN_CPUS_PER_TASK={cpus}";
        }
        yield return "unset OEC_COORDINATOR MASTER_ADDR RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE";
    }

    static IEnumerable<string> Coordinator(SbatchOptions o)
    {
        string config = o.ConfigFile is null ? "" : $" --config {ManifestFiles.Quote([o.ConfigFile])}";
        yield return "# The coordinator, on this node: it holds the data order and the job's state, not a model (no GPU).";
        yield return $"\"${{oecrun[@]}}\" coordinator --port \"$MASTER_PORT\" --metrics-port {o.MetricsPort}{config} {ManifestFiles.Quote([.. o.Overrides, .. RenderedSettings(o)])} &";
        yield return "coordinator=$!";
    }

    /// <summary>The rank step, started again while the coordinator runs, as a Kubernetes Job recreates its pods. Exits 4
    /// (the coordinator ended the generation: a restart, a rollback, a stop on the ranks' own signal) and 5 (it was
    /// unreachable) are the coordinator's to count and bound; other failures count here, at most job.max_restarts
    /// times; exit 2 (a bad configuration) is not retried. Without --kill-on-bad-exit: a rank that fails is the
    /// coordinator's to notice, and it tells the others, which may still be writing their part of a checkpoint.
    /// When the script gives up, the coordinator stops at a checkpoint and the script exits 1, not the stop's 0.</summary>
    static IEnumerable<string> Ranks(int maxRestarts)
    {
        yield return "# The ranks: one task per GPU (or CPU rank), rank SLURM_PROCID on cuda:SLURM_LOCALID; every task sees its node's GPUs.";
        yield return "status=0";
        yield return "failures=0";
        yield return "while kill -0 \"$coordinator\" 2>/dev/null; do";
        yield return "  status=0";
        yield return "  srun \"${oecrun[@]}\" rank || status=$?";
        yield return $"  if [ \"$status\" -eq 0 ] || [ \"$status\" -eq {ExitCodes.Refused} ]; then break; fi";
        yield return $"  if [ \"$status\" -ne {ExitCodes.Restart} ] && [ \"$status\" -ne {ExitCodes.LostCoordinator} ]; then";
        yield return "    failures=$((failures + 1))";
        yield return $"    if [ \"$failures\" -gt {maxRestarts} ]; then break; fi";
        yield return "  fi";
        yield return "done";
        yield return "# Ranks that gave up: the coordinator stops at a checkpoint instead of waiting for them, and the job is not done.";
        yield return "if [ \"$status\" -ne 0 ] && kill -TERM \"$coordinator\" 2>/dev/null; then wait \"$coordinator\"; exit 1; fi";
        yield return "wait \"$coordinator\"";
    }
}
