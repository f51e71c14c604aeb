// `oecrun slurm`: the sbatch script's directives, the coordinator before the rank step, the rendered configuration, and
// refusals of bad options; bash accepts every rendering.
using System.Diagnostics;
using OecRun.Slurm;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class SlurmScriptTests
{
    static string Render(params string[] args)
    {
        var (code, output, error) = Invoke(["slurm", .. args]);
        Assert.True(code == 0, error);
        return output;
    }

    static string[] Lines(string script, string prefix) => script.Split('\n').Where(l => l.StartsWith(prefix, StringComparison.Ordinal)).ToArray();

    [Fact]
    public void A_gpu_job_asks_for_one_task_per_gpu_on_every_node_with_the_partition_account_and_time_given()
    {
        string script = Render("--name", "gpt", "--nodes", "4", "--gpus-per-node", "8", "--time", "2-00:00:00", "--partition", "a100", "--account", "proj-1", "--cpus-per-task", "12", "train.batch_size=64");

        Assert.Equal(
            ["--job-name=gpt", "--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=12", "--time=2-00:00:00", "--partition=a100", "--account=proj-1", "--output=gpt-%j.out"],
            Lines(script, "#SBATCH ").Select(l => l["#SBATCH ".Length..]));
        Assert.StartsWith("#!/bin/bash\n" + SbatchScript.Header + "\n", script);
        // srun passes the cores on to each rank task, whatever the Slurm version
        Assert.Equal(["export SRUN_CPUS_PER_TASK=12"], Lines(script, "export SRUN_CPUS_PER_TASK"));
    }

    [Fact]
    public void A_cpu_job_asks_for_no_gpus_and_leaves_the_partition_and_account_to_the_cluster()
    {
        string script = Render("--name", "cpu", "--nodes", "2", "--ranks-per-node", "3", "train.batch_size=12");

        string[] directives = Lines(script, "#SBATCH ");
        Assert.Contains("#SBATCH --ntasks-per-node=3", directives);
        Assert.DoesNotContain(directives, d => d.Contains("gpus") || d.Contains("partition") || d.Contains("account") || d.Contains("cpus-per-task"));
        Assert.DoesNotContain("SRUN_CPUS_PER_TASK", script);
        Assert.Contains("job.world_size=6", script);
        Assert.Contains("train.device=cpu job.backend=tcp", script);
    }

    [Fact]
    public void The_coordinator_starts_in_the_background_before_the_rank_step_and_the_script_ends_with_its_exit_code()
    {
        string script = Render("--name", "gpt", "--nodes", "2", "--gpus-per-node", "4", "--port", "29555", "--oecrun", "dotnet /opt/oec/oecrun.dll", "train.steps=100");
        var lines = script.Split('\n').ToList();

        int coordinator = lines.FindIndex(l => l.StartsWith("\"${oecrun[@]}\" coordinator --port \"$MASTER_PORT\"", StringComparison.Ordinal));
        int srun = lines.FindIndex(l => l.Trim().StartsWith("srun ", StringComparison.Ordinal));
        Assert.True(coordinator >= 0 && srun > coordinator, script);
        Assert.EndsWith(" &", lines[coordinator]);
        Assert.Contains("train.steps=100 job.world_size=8 job.id=gpt run.out_dir=runs/gpt job.resume=auto train.device=cuda job.backend=nccl", lines[coordinator]);
        Assert.Equal("srun \"${oecrun[@]}\" rank || status=$?", lines[srun].Trim());
        Assert.Contains("oecrun=(dotnet /opt/oec/oecrun.dll)", lines);
        Assert.Contains("export MASTER_PORT=29555", lines);
        Assert.Contains("export OEC_JOB_ID=gpt", lines);
        Assert.Contains("unset OEC_COORDINATOR MASTER_ADDR RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE", lines);
        Assert.Equal("wait \"$coordinator\"", lines.Last(l => l.Length > 0));
    }

    [Fact]
    public void The_rank_step_is_retried_at_most_job_max_restarts_times_for_failures_and_while_the_coordinator_runs_for_its_own_orders()
    {
        string script = Render("--name", "gpt", "--nodes", "1", "job.max_restarts=7");

        Assert.Contains("while kill -0 \"$coordinator\" 2>/dev/null; do", script);
        Assert.Contains("  if [ \"$status\" -ne 4 ] && [ \"$status\" -ne 5 ]; then", script); // a restart, rollback or own stop is the coordinator's to count
        Assert.Contains("    if [ \"$failures\" -gt 7 ]; then break; fi", script);
    }

    [Fact]
    public void The_script_records_how_it_was_rendered_and_quotes_what_a_shell_would_split()
    {
        string script = Render("--name", "gpt", "--nodes", "1", "--run-dir", "/shared/runs/my run", "--oecrun", "/opt/oec/oecrun");

        Assert.Contains("# oecrun slurm --name gpt --nodes 1 --run-dir '/shared/runs/my run' --oecrun /opt/oec/oecrun\n", script);
        Assert.Contains("'run.out_dir=/shared/runs/my run'", script);
    }

    [Theory]
    [InlineData("1", "2")]
    [InlineData("2", "0")]
    [InlineData("4", "4")]
    public void Bash_parses_every_rendering(string nodes, string gpus)
    {
        using var temp = new TempDirectory();
        string file = Path.Combine(temp.Path, "job.sbatch"), config = Path.Combine(temp.Path, "o'ec job.json");
        File.WriteAllText(config, "{\"train\": {\"steps\": 100, \"batch_size\": 32}}");
        var (code, output, error) = Invoke("slurm", "--name", "gpt", "--nodes", nodes, "--gpus-per-node", gpus, "--config", config, "--out", file);
        Assert.True(code == 0, error);
        Assert.Contains($" --config '{config.Replace("'", "'\\''")}' ", File.ReadAllText(file));

        using var bash = Process.Start(new ProcessStartInfo("bash", ["-n", file]) { RedirectStandardError = true })!;
        Assert.True(bash.WaitForExit(TimeSpan.FromSeconds(30)));
        Assert.True(bash.ExitCode == 0, bash.StandardError.ReadToEnd() + output);
    }

    [Fact]
    public void The_out_file_holds_the_script_that_stdout_would_show()
    {
        using var temp = new TempDirectory();
        string file = Path.Combine(temp.Path, "job.sbatch");
        string[] args = ["--name", "gpt", "--nodes", "2", "--gpus-per-node", "2"];

        var (code, output, _) = Invoke(["slurm", .. args, "--out", file]);

        Assert.Equal(0, code);
        Assert.Contains($"wrote {file}", output);
        Assert.Equal(Render(args).Split('\n').Where(l => !l.Contains("OEC_JOB_TOKEN=")), File.ReadAllText(file).Split('\n').Where(l => !l.Contains("OEC_JOB_TOKEN=")));
        Assert.Single(Directory.GetFiles(temp.Path));
    }

    [Theory]
    [InlineData("--name = 'my job'", "--name", "my job", "--nodes", "1")]
    [InlineData("--nodes = 0", "--name", "j", "--nodes", "0")]
    [InlineData("--ranks-per-node = 2: a GPU job runs one rank per GPU (--gpus-per-node = 4)", "--name", "j", "--nodes", "1", "--gpus-per-node", "4", "--ranks-per-node", "2")]
    [InlineData("--time = '1h'", "--name", "j", "--nodes", "1", "--time", "1h")]
    [InlineData("--partition = 'a b'", "--name", "j", "--nodes", "1", "--partition", "a b")]
    [InlineData("--metrics-port = 29400: must be a port in [0, 65535] other than --port = 29400", "--name", "j", "--nodes", "1", "--metrics-port", "29400")]
    [InlineData("--port = 0", "--name", "j", "--nodes", "1", "--port", "0")]
    [InlineData("--cpus-per-task = 0", "--name", "j", "--nodes", "1", "--cpus-per-task", "0")]
    [InlineData("train.batch_size", "--name", "j", "--nodes", "3", "train.batch_size=8")]
    public void Bad_options_exit_with_2_naming_the_option_and_value_and_write_nothing(string expected, params string[] args)
    {
        using var temp = new TempDirectory();
        string file = Path.Combine(temp.Path, "job.sbatch");

        var (code, _, error) = Invoke(["slurm", .. args, "--out", file]);

        Assert.Equal(2, code);
        Assert.Contains(expected, error);
        Assert.Empty(Directory.GetFileSystemEntries(temp.Path));
    }
}
