// The launchers' one way to start a rank process: prefixed output, the environment, and killing after a grace period.
using OecRun.Launching;

namespace OecRun.UnitTests;

public class SpawnedRankTests
{
    static ProcessCommand Shell(string script) => new("/bin/sh", ["-c", script]);

    [Fact]
    public async Task Every_line_of_stdout_and_stderr_arrives_with_the_rank_prefix_and_the_environment_is_set()
    {
        var lines = new List<string>();
        using var rank = SpawnedRank.Start(Shell("echo out $OEC_TEST_VALUE; echo err >&2"), 3, new Dictionary<string, string> { ["OEC_TEST_VALUE"] = "42" },
            line => { lock (lines) lines.Add(line); });

        await rank.Exited.WaitAsync(TimeSpan.FromSeconds(30));
        rank.Process.WaitForExit(); // the redirected streams are drained before this returns

        Assert.Equal(3, rank.Rank);
        Assert.Equal(0, rank.Process.ExitCode);
        Assert.Equal(["[rank 3] err", "[rank 3] out 42"], lines.Order());
    }

    [Fact]
    public async Task Reaping_kills_only_the_processes_that_outlive_the_grace_period_and_announces_each()
    {
        using var quick = SpawnedRank.Start(Shell("exit 4"), 0, new Dictionary<string, string>(), _ => { });
        using var stuck = SpawnedRank.Start(Shell("sleep 60"), 1, new Dictionary<string, string>(), _ => { });
        var killed = new List<int>();

        var reaped = SpawnedRank.ReapAsync([quick, stuck], TimeSpan.FromMilliseconds(500), r => killed.Add(r.Rank));
        await reaped.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal([1], killed);
        Assert.True(stuck.Process.HasExited);
        Assert.Equal(4, quick.Process.ExitCode);
    }

    [Fact]
    public void A_program_that_does_not_exist_throws_on_start()
    {
        Assert.ThrowsAny<System.ComponentModel.Win32Exception>(() =>
            SpawnedRank.Start(new ProcessCommand("/nonexistent/oecrun", []), 0, new Dictionary<string, string>(), _ => { }));
    }
}
