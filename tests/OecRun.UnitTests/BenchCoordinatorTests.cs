// `oecrun bench-coordinator --interval`: ranks heartbeat once an interval, so many ranks can be measured at the
// heartbeat rate of fewer; an interval out of range is refused naming it.
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class BenchCoordinatorTests
{
    [Fact]
    public void Ranks_heartbeat_once_an_interval_in_the_steady_window()
    {
        var (code, output, error) = Invoke("bench-coordinator", "--ranks", "32", "--seconds", "2", "--interval", "0.5");

        Assert.True(code == 0, error + output);
        Assert.Contains("heartbeat every 0.5 s (64 a second)", output);
        var row = output.Split('\n').Single(l => l.StartsWith("| 32 |", StringComparison.Ordinal)).Split('|', StringSplitOptions.TrimEntries);
        Assert.Equal("128", row[4]); // steady heartbeats: 32 ranks x 2 s / 0.5 s
        Assert.Equal("0", row[5]);   // errors
    }

    [Theory]
    [InlineData("0")]
    [InlineData("31")]
    public void An_interval_outside_10_ms_to_30_s_is_refused(string interval)
    {
        var (code, output, error) = Invoke("bench-coordinator", "--interval", interval);

        Assert.Equal(2, code);
        Assert.Contains($"--interval {interval}: must be in [0.01, 30] seconds", error);
        Assert.Equal("", output);
    }
}
