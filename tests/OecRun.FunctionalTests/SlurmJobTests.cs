// `oecrun slurm`'s script run whole on one machine: bash runs it as sbatch would on the first node, and an srun stand-in
// starts its rank command once per task with that task's Slurm variables only.
using System.Net;
using System.Net.Sockets;
using OecRun.Launching;
using OecRun.Slurm;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public class SlurmJobTests(ITestOutputHelper log)
{
    /// <summary>srun on one machine: SLURM_NTASKS tasks of the command, SLURM_NTASKS_PER_NODE to a node, each task's
    /// output labelled "TASK: " as `srun --label` does; exits with the worst task's code. Its first step exits 4 at once,
    /// as ranks told to restart do (a rollback, a stop on their own signal): the script must start the step again
    /// whatever job.max_restarts (0 here), since the coordinator counts those itself.</summary>
    const string Srun = """
        #!/bin/bash
        while [[ $1 == -* ]]; do shift; done
        if [ ! -e "$0.ran" ]; then touch "$0.ran"; echo "srun: first step exits 4"; exit 4; fi
        pids=()
        for ((task = 0; task < SLURM_NTASKS; task++)); do
          SLURM_PROCID=$task SLURM_LOCALID=$((task % SLURM_NTASKS_PER_NODE)) SLURM_NODEID=$((task / SLURM_NTASKS_PER_NODE)) \
            "$@" > >(sed -u "s/^/$task: /") 2>&1 &
          pids+=($!)
        done
        status=0
        for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
        exit $status
        """;

    [Fact, System.Runtime.Versioning.SupportedOSPlatform("linux")] // the srun stand-in's file mode
    public async Task A_two_node_cpu_job_s_script_starts_the_coordinator_and_ranks_placed_by_Slurm_s_variables_that_finish_training()
    {
        using var temp = new TempDirectory();
        string bin = Directory.CreateDirectory(Path.Combine(temp.Path, "bin")).FullName, script = Path.Combine(temp.Path, "job.sbatch");
        File.WriteAllText(Path.Combine(bin, "srun"), Srun.Replace("\r", "") + "\n");
        File.SetUnixFileMode(Path.Combine(bin, "srun"), UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var self = Launch.SelfCommand();
        var options = new SbatchOptions
        {
            Name = "slurm-job", Nodes = 2, Port = FreePort(), MetricsPort = 0, Oecrun = string.Join(' ', [self.FileName, .. self.Arguments]),
            RunDir = Path.Combine(temp.Path, "run"),
            Overrides = ["train.steps=20", "train.warmup_steps=5", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=0", "train.log_every=5",
                         "data.synthetic_tokens=30000", "job.checkpoint_every=10", "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=10", "job.max_restarts=0"],
        };
        SbatchScript.Write(SbatchScript.Render(options, "(test)"), script);

        // What sbatch gives the batch script of a 2-node job with 1 task per node; no torchrun or oecrun variable.
        using var job = ChildProcesses.Start(new ProcessCommand("bash", [script]), new()
        {
            ["PATH"] = $"{bin}:{Environment.GetEnvironmentVariable("PATH")}", ["SLURM_JOB_ID"] = "42", ["SLURM_JOB_NODELIST"] = "localhost",
            ["SLURM_NNODES"] = "2", ["SLURM_NTASKS"] = "2", ["SLURM_NTASKS_PER_NODE"] = "1", ["SLURM_TASKS_PER_NODE"] = "1(x2)",
            ["OEC_COORDINATOR"] = null, ["OEC_JOB_ID"] = null, ["OEC_JOB_TOKEN"] = null, ["MASTER_ADDR"] = null, ["MASTER_PORT"] = null,
            ["RANK"] = null, ["WORLD_SIZE"] = null, ["LOCAL_RANK"] = null, ["LOCAL_WORLD_SIZE"] = null,
        });
        var output = job.StandardOutput.ReadToEndAsync();
        var errors = job.StandardError.ReadToEndAsync();
        try
        {
            Assert.True(job.WaitForExit(TimeSpan.FromMinutes(3)), "the job still runs after 3 minutes");
        }
        finally
        {
            if (!job.HasExited) job.Kill(entireProcessTree: true);
        }
        string text = await output;
        log.WriteLine(text + await errors);

        Assert.Equal(0, job.ExitCode);
        Assert.Contains("srun: first step exits 4", text);
        foreach (int task in new[] { 0, 1 })
            Assert.Contains($"{task}: rank: asking http://localhost:{options.Port}/ for rank {task} of 2 (local rank 0 of 1; placement from Slurm)", text);
        Assert.Contains("0: done: 20 steps", text); // rank 0 reports for the job
        string coordinatorLog = File.ReadAllText(Path.Combine(options.RunDir, "coordinator.log"));
        Assert.Contains("generation 1: all 2 ranks registered", coordinatorLog);
        Assert.Contains("job slurm-job succeeded: finished 20 steps", coordinatorLog);
    }

    static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Any, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
