// The step metrics' one list of fields and their one mapping to the wire: names as metrics.jsonl writes them, values
// unchanged both ways, val_loss absent when not measured.
using System.Text.Json;
using Job;

namespace Coordinator.UnitTests;

public class StepMetricsTests
{
    static readonly StepMetrics Sample = new(7, 3.5, 3.75, 1e-3, 0.9, 12_345, 0.125, 0.25, -0.5, 1.5, 9, 6.25, 0.7);

    [Fact]
    public void The_fields_are_the_records_metrics_after_step_named_and_ordered_as_metrics_jsonl_writes_them()
    {
        var path = Path.Combine(Path.GetTempPath(), $"step-metrics-{Guid.NewGuid():N}.jsonl");
        try
        {
            using (var log = new MetricsLog(path)) log.Write(Sample);
            var line = JsonDocument.Parse(File.ReadAllText(path)).RootElement;
            var names = line.EnumerateObject().Select(p => p.Name).ToList();
            Assert.Equal(names.Skip(1), StepMetrics.Fields.Select(f => f.Name));
            Assert.All(StepMetrics.Fields, f => Assert.Equal(line.GetProperty(f.Name).GetDouble(), f.Read(Sample)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_record_goes_to_the_wire_and_back_unchanged_with_or_without_a_validation_loss()
    {
        Assert.Equal(Sample, Sample.ToProto().ToRecord());
        var unvalidated = Sample with { ValLoss = null };
        Assert.False(unvalidated.ToProto().HasValLoss);
        Assert.Equal(unvalidated, unvalidated.ToProto().ToRecord());
    }
}
