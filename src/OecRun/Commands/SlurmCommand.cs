// `oecrun slurm`: render a job's sbatch script, to stdout or a file.
using System.CommandLine;
using OecRun.Kubernetes;
using OecRun.Slurm;

namespace OecRun.Commands;

public static class SlurmCommand
{
    public static Command Create()
    {
        var command = new Command("slurm", "Render the sbatch script of a multi-node job: the coordinator on the first node, one `oecrun rank` task per GPU " +
                                           "through srun (rank = SLURM_PROCID, GPU = SLURM_LOCALID). Submit it with sbatch.");
        var b = new OptionBinder<SbatchOptions>(command, new SbatchOptions());
        var d = b.Defaults;
        b.Add(new Option<string>("--name") { Description = "The job's name: Slurm's --job-name, job.id and OEC_JOB_ID.", Required = true }, (o, v) => o with { Name = v });
        b.Add(new Option<int>("--nodes") { Description = "Nodes of the allocation.", Required = true }, (o, v) => o with { Nodes = v });
        b.Add(new Option<int>("--gpus-per-node") { Description = "GPUs per node, one rank each (--ntasks-per-node, --gpus-per-node; job.backend = nccl); 0 = a CPU job (job.backend = tcp).", DefaultValueFactory = _ => d.GpusPerNode },
            (o, v) => o with { GpusPerNode = v });
        b.Add(new Option<int?>("--ranks-per-node") { Description = "Ranks per node of a CPU job (default 1)." }, (o, v) => o with { RanksPerNode = v });
        b.Add(new Option<int?>("--cpus-per-task") { Description = "Slurm's --cpus-per-task: cores of each rank (default: the partition's)." }, (o, v) => o with { CpusPerTask = v });
        b.Add(new Option<string>("--time") { Description = "Slurm's time limit, e.g. 04:00:00 or 2-00:00:00.", DefaultValueFactory = _ => d.Time }, (o, v) => o with { Time = v });
        b.Add(new Option<string?>("--partition") { Description = "Slurm's --partition (default: the cluster's)." }, (o, v) => o with { Partition = v });
        b.Add(new Option<string?>("--account") { Description = "Slurm's --account (default: the user's)." }, (o, v) => o with { Account = v });
        b.Add(new Option<int>("--port") { Description = "The coordinator's gRPC port on the first node (the ranks' MASTER_PORT).", DefaultValueFactory = _ => d.Port },
            (o, v) => o with { Port = v });
        b.Add(new Option<int>("--metrics-port") { Description = "The coordinator's /metrics and /live port (0: any free port).", DefaultValueFactory = _ => d.MetricsPort },
            (o, v) => o with { MetricsPort = v });
        b.Add(new Option<string>("--oecrun") { Description = "The command that runs oecrun on the nodes, e.g. /shared/oec/oecrun or 'dotnet /shared/oec/oecrun.dll'.", DefaultValueFactory = _ => d.Oecrun },
            (o, v) => o with { Oecrun = v });
        b.Add(new Option<string?>("--run-dir") { Description = "run.out_dir, on a filesystem every node shares (default: runs/NAME under the directory sbatch runs in)." },
            (o, v) => o with { RunDir = v });
        b.Add(CommandLine.ConfigOption("The run configuration (JSON), read by the coordinator on the first node; validated now. job.world_size, job.id, job.backend, train.device, job.resume = auto and run.out_dir are set by this command."),
            (o, v) => o with { ConfigFile = v });
        b.Add(CommandLine.OverridesArgument("train.learning_rate=1e-3 oec.method=mu_loss train.steps=2000"), (o, v) => o with { Overrides = v ?? [] });
        var output = new Option<string?>("--out") { Description = "The script's file (default: stdout)." };
        command.Options.Add(output);
        command.SetGuardedAction(parse =>
        {
            string script = SbatchScript.Render(b.Bind(parse), ManifestFiles.Quote(KubernetesCommand.RenderedWith(parse, command)));
            if (parse.GetValue(output) is not string file)
            {
                Console.Write(script);
                return 0;
            }
            SbatchScript.Write(script, file);
            Console.WriteLine($"wrote {file}: submit it with `sbatch {file}`");
            return 0;
        });
        return command;
    }
}
