// One run's metrics log read for reports: the run's name, its curve and rolled-back steps, and any field as finite points over steps.
using Job;
using Rank.Training;

namespace OecRun.Reporting;

/// <summary>The finite points of one field over steps (x: optimizer steps; y: the field's unit), and how many logged
/// values were left out because they were NaN or infinite.</summary>
public sealed record Series(string Field, double[] Steps, double[] Values, int Dropped);

/// <param name="Name">The run directory's name: the run's name in legends.</param>
/// <param name="LogPath">The metrics.jsonl that was read.</param>
/// <param name="Steps">The run's curve: the logged steps that were not rolled back.</param>
/// <param name="RolledBack">The steps undone by each rollback or restart, one list per pass (MetricsLog.RolledBackRuns).</param>
public sealed record RunMetrics(string Name, string LogPath, IReadOnlyList<StepMetrics> Steps, IReadOnlyList<IReadOnlyList<StepMetrics>> RolledBack)
{
    public const string LogFileName = "metrics.jsonl";

    /// <summary>Reads a run directory holding metrics.jsonl, or a metrics.jsonl path. A missing log is an
    /// ArgumentException, an empty or malformed one a DataFormatException naming the file (and line).</summary>
    public static RunMetrics Read(string run)
    {
        string log = Directory.Exists(run) ? Path.Combine(run, LogFileName) : run;
        if (!File.Exists(log))
            throw new ArgumentException($"no metrics log at {log} (give a run directory holding {LogFileName}, or the file itself)");
        var all = MetricsLog.ReadAll(log);
        if (all.Count == 0) throw new Data.DataFormatException($"{log}: the metrics log is empty (no logged steps)");
        return new RunMetrics(Path.GetFileName(RunDirectory(log)), log, [.. all.Where(m => m.RolledBackTo is null)], MetricsLog.RolledBackRuns(all));
    }

    /// <summary>The directory the log lies in: where the run's other files are, and the report's default output.</summary>
    public static string RunDirectory(string log) => Path.GetDirectoryName(Path.GetFullPath(log))!;

    /// <summary>`field`'s finite values over the curve's steps.</summary>
    public Series Points(string field, Func<StepMetrics, double?> value) => PointsOf(Steps, field, value);

    /// <summary>`field`'s finite values over <paramref name="steps"/>. Steps where it is null (val_loss off validation
    /// steps) are no points and not counted as dropped.</summary>
    public static Series PointsOf(IEnumerable<StepMetrics> steps, string field, Func<StepMetrics, double?> value)
    {
        var (xs, ys) = (new List<double>(), new List<double>());
        int dropped = 0;
        foreach (var metrics in steps)
        {
            if (value(metrics) is not double y) continue;
            if (!double.IsFinite(y)) { dropped++; continue; }
            xs.Add(metrics.Step);
            ys.Add(y);
        }
        return new Series(field, [.. xs], [.. ys], dropped);
    }
}
