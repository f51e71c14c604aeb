// Deterministic failures end a local job at once naming their cause (a model larger than the machine, a full disk), and
// a killed rank is named in the failure line rather than the survivor that saw its connection close.
using System.Diagnostics;
using Coordinator;
using OecRun.Launching;
using Rank.Configuration;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests.Faults;

public class ResourceFaultTests(ITestOutputHelper log)
{
    static readonly string[] Small =
    [
        "train.warmup_steps=1", "train.batch_size=4", "train.sequence_length=32", "train.eval_every=0", "train.log_every=1",
        "train.threads=1", "data.synthetic_tokens=20000", "job.heartbeat_interval_s=0.2", "job.heartbeat_timeout_s=10",
    ];

    [Fact]
    public async Task An_absurd_d_model_exits_2_at_once_naming_the_estimate_and_the_limit_with_no_rank_started()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");
        using var train = ChildProcesses.Start(Launch.SelfCommand("train", "model.d_model=1000000000", "job.max_restarts=3", "run.out_dir=" + outDir), new());
        var output = train.StandardOutput.ReadToEndAsync();
        string error = await train.StandardError.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(60));
        Assert.True(train.WaitForExit(TimeSpan.FromSeconds(60)), "oecrun train still runs 60 s after it was started");

        Assert.Equal(2, train.ExitCode);
        Assert.Matches(@"^error: model.d_model = 1000000000, model.n_layer = 2: training needs at least [\d.E+]+ GiB .* but [\d.]+ GiB is available", error);
        Assert.DoesNotContain("[rank", await output);
        Assert.False(Directory.Exists(outDir)); // refused before the coordinator opened its log
    }

    [SkippableFact]
    public async Task A_full_disk_fails_the_job_without_restarts_naming_No_space_left_on_device()
    {
        using var temp = new TempDirectory();
        string outDir = Directory.CreateDirectory(temp.File("run")).FullName;
        using var disk = Tmpfs.Mount(outDir, "768k"); // config, logs and metrics fit; the first checkpoint does not
        var config = RunConfig.Load(null, [.. Small, "train.steps=200", "job.world_size=2", "job.checkpoint_every=5", "job.max_restarts=3", "run.out_dir=" + outDir]);
        var console = new StringWriter();
        JobState? job = null;

        int exit = await Launch.Local(config, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None, created: j => job = j)
            .WaitAsync(TimeSpan.FromMinutes(4));
        log.WriteLine(console.ToString());

        Assert.Equal(1, exit);
        Assert.Equal(0, job!.Restarts);
        Assert.Matches(@"job .*: failed: rank \d: No space left on device : '.*' \(out of a resource: not restarted", console.ToString());
        Assert.DoesNotContain("closed the connection", console.ToString().Split('\n').Single(l => l.Contains(": failed: ")));
    }

    [Theory]
    [InlineData(1, 15)]
    [InlineData(0, 30)]
    public async Task A_killed_rank_is_named_in_the_failure_line_not_the_survivor(int killed, int atStep)
    {
        using var temp = new TempDirectory();
        var config = RunConfig.Load(null, [.. Small, "train.steps=100000", "job.world_size=2", "job.checkpoint_every=0", "job.max_restarts=0",
            "run.out_dir=" + temp.File("run")]);

        var fault = await FaultJob.RunLocal(config, killed, atStep, process => process.Kill(), log); // SIGKILL

        Assert.Equal(1, fault.Exit);
        string failed = fault.Console.Split('\n').Single(l => l.Contains(": failed: "));
        Assert.Matches($@"last failure: rank {killed} \(pid {fault.Pid}\) exited with code 137 \(killed by signal 9\)", failed);
    }

    /// <summary>A tmpfs of a given size mounted over a directory (root and mount -t tmpfs needed, else the test is skipped
    /// with the reason); unmounted on Dispose.</summary>
    sealed class Tmpfs : IDisposable
    {
        readonly string path;

        Tmpfs(string path) => this.path = path;

        public static Tmpfs Mount(string path, string size)
        {
            Skip.IfNot(Environment.IsPrivilegedProcess, "mounting a tmpfs needs root");
            var (code, error) = Run("mount", "-t", "tmpfs", "-o", $"size={size}", "tmpfs", path);
            Skip.If(code != 0, $"mount -t tmpfs failed here (exit code {code}): {error}");
            return new Tmpfs(path);
        }

        static (int Code, string Error) Run(string program, params string[] arguments)
        {
            using var p = Process.Start(new ProcessStartInfo(program, arguments) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            string error = p.StandardError.ReadToEnd();
            p.WaitForExit();
            return (p.ExitCode, error.Trim());
        }

        public void Dispose() => Run("umount", path);
    }
}
