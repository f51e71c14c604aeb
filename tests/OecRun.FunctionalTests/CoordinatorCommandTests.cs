// `oecrun coordinator` as a process: SIGTERM stops it cleanly.
using System.Diagnostics;
using OecRun.Launching;

namespace OecRun.FunctionalTests;

public class CoordinatorCommandTests
{
    [Fact]
    public void The_coordinator_command_stops_on_SIGTERM_and_exits_with_0()
    {
        using var temp = new TempDirectory();
        using var coordinator = ChildProcesses.Start(
            Launch.SelfCommand("coordinator", "--port", "0", "--metrics-port", "0", "job.id=sigterm", "data.synthetic_tokens=20000", "run.out_dir=" + temp.Path),
            new() { ["OEC_JOB_TOKEN"] = new string('k', 32) });
        var clock = Stopwatch.StartNew();
        string? line;
        while ((line = coordinator.StandardOutput.ReadLine()) is not null && !line.Contains("listening on") && clock.Elapsed < TimeSpan.FromSeconds(60)) { }
        Assert.Contains("listening on", line);

        ChildProcesses.Signal(coordinator, 15); // SIGTERM
        Assert.True(coordinator.WaitForExit(TimeSpan.FromSeconds(30)), "the coordinator still runs 30 s after SIGTERM");

        Assert.Equal(0, coordinator.ExitCode);
        Assert.Contains("stopped (SIGTERM)", File.ReadAllText(Path.Combine(temp.Path, "coordinator.log")));
    }
}
