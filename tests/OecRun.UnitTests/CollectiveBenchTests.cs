// The benchmark's table: one row per world size and message size, busbw = algbw * 2(n-1)/n.
using System.Globalization;
using OecRun.Bench;

namespace OecRun.UnitTests;

public class CollectiveBenchTests
{
    [Fact]
    public void The_table_has_a_row_per_size_and_busbw_follows_the_nccl_tests_definition()
    {
        var output = new StringWriter();

        // Not 1 KB: on a loaded machine its algbw (GB/s, 3 decimals) prints as 0.000.
        CollectiveBench.Run([2, 3], [64 * 1024, 1024 * 1024], output);

        string text = output.ToString();
        Assert.Contains("raw TCP loopback", text);
        var rows = text.Split('\n').Where(l => l.StartsWith("| 2 |") || l.StartsWith("| 3 |")).ToList();
        Assert.Equal(4, rows.Count);
        foreach (var row in rows)
        {
            var cells = row.Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            int n = int.Parse(cells[0], CultureInfo.InvariantCulture);
            double algbw = double.Parse(cells[4], CultureInfo.InvariantCulture);
            double busbw = double.Parse(cells[5], CultureInfo.InvariantCulture);
            Assert.True(algbw > 0, row);
            Assert.Equal(algbw * 2 * (n - 1) / n, busbw, 0.0015); // both printed to 3 decimals
        }
    }
}
