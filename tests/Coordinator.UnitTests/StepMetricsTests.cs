// The step metrics' one list of fields and their one mapping to the wire: names as metrics.jsonl writes them, values
// unchanged both ways, val_loss absent when not measured; the log across resumes and rollbacks.
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

    [Fact]
    public void A_resumed_log_keeps_the_steps_through_the_checkpoint_and_drops_a_last_line_torn_by_a_crash()
    {
        var path = Path.Combine(Path.GetTempPath(), $"step-metrics-{Guid.NewGuid():N}.jsonl");
        try
        {
            using (var log = new MetricsLog(path)) foreach (int step in new[] { 5, 10, 15 }) log.Write(Sample with { Step = step });
            string whole = File.ReadAllText(path);
            File.WriteAllText(path, whole + whole.Split('\n')[0][..20]); // a crash mid-write: half a line, no newline

            using (var resumed = new MetricsLog(path, keepThrough: 10)) resumed.Write(Sample with { Step = 11 });

            Assert.Equal([5, 10, 11], MetricsLog.Read(path).Select(m => m.Step));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void The_steps_a_resume_or_rollback_undoes_stay_in_the_log_marked_with_the_step_it_went_back_to()
    {
        var path = Path.Combine(Path.GetTempPath(), $"step-metrics-{Guid.NewGuid():N}.jsonl");
        try
        {
            using (var log = new MetricsLog(path)) foreach (int step in new[] { 5, 10, 15 }) log.Write(Sample with { Step = step });
            using (var resumed = new MetricsLog(path, keepThrough: 10)) resumed.Write(Sample with { Step = 15, TrainLoss = 2 });
            using (var rolledBack = new MetricsLog(path, keepThrough: 0)) rolledBack.Write(Sample with { Step = 5, TrainLoss = 1 });

            var all = MetricsLog.ReadAll(path);
            Assert.Equal([(5, 0L), (10, 0L), (15, 10L), (15, 0L), (5, null)], all.Select(m => (m.Step, m.RolledBackTo)));
            Assert.Equal([(5, 1.0)], MetricsLog.Read(path).Select(m => (m.Step, m.TrainLoss))); // the curve
            Assert.Contains("\"rolled_back_to\":10", File.ReadAllLines(path)[2]);
            Assert.DoesNotContain("rolled_back_to", File.ReadAllLines(path)[^1]);
            Assert.Equal([[5, 10, 15], [15]], MetricsLog.RolledBackRuns(all).Select(run => run.Select(m => m.Step)));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_torn_line_before_the_last_stops_a_resume_naming_the_file_and_the_line()
    {
        var path = Path.Combine(Path.GetTempPath(), $"step-metrics-{Guid.NewGuid():N}.jsonl");
        try
        {
            using (var log = new MetricsLog(path)) foreach (int step in new[] { 5, 10 }) log.Write(Sample with { Step = step });
            var lines = File.ReadAllLines(path);
            File.WriteAllLines(path, [lines[0], lines[1][..20], lines[1]]);

            var e = Assert.Throws<Data.DataFormatException>(() => new MetricsLog(path, keepThrough: 10));
            Assert.StartsWith($"{path} line 2: not a metrics record", e.Message);
            Assert.Equal(3, File.ReadAllLines(path).Length); // nothing rewritten
        }
        finally
        {
            File.Delete(path);
        }
    }
}
