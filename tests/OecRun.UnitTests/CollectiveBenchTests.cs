// The benchmark's table: one row per collective, world size and message size, busbw by the nccl-tests definitions.
using System.Globalization;
using OecRun.Bench;

namespace OecRun.UnitTests;

public class CollectiveBenchTests
{
    [Fact]
    public void The_table_has_a_row_per_op_and_size_and_busbw_follows_the_nccl_tests_definition()
    {
        var output = new StringWriter();

        // Not 1 KB: on a loaded machine its algbw (GB/s, 3 decimals) prints as 0.000.
        CollectiveBench.Run([2, 3], [64 * 1024, 1024 * 1024], output);

        string text = output.ToString();
        Assert.Contains("raw TCP loopback, one stream", text);
        Assert.Contains("raw TCP loopback, 3 streams at once", text);
        var rows = text.Split('\n').Where(l => l.StartsWith("| all-") || l.StartsWith("| reduce-")).ToList();
        Assert.Equal(12, rows.Count);
        foreach (var row in rows)
        {
            var cells = row.Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            int n = int.Parse(cells[1], CultureInfo.InvariantCulture);
            double algbw = double.Parse(cells[5], CultureInfo.InvariantCulture);
            double busbw = double.Parse(cells[6], CultureInfo.InvariantCulture);
            double factor = cells[0] == "all-reduce" ? 2.0 * (n - 1) / n : (n - 1.0) / n;
            Assert.True(algbw > 0, row);
            Assert.Equal(algbw * factor, busbw, 0.0015); // both printed to 3 decimals
        }
        Assert.Equal(4, rows.Count(r => r.StartsWith("| reduce-scatter | ")));
    }
}
