// `oecrun report`'s y axes: a log scale and a clipped range per chart, so that one diverged run does not flatten the others.
using System.Globalization;
using ScottPlot;
using ScottPlot.TickGenerators;

namespace OecRun.Reporting;

/// <param name="LogY">The left y axes in log10 scale (ticks at powers of ten); non-positive values are left out.</param>
/// <param name="Ranges">Chart (its file's stem: loss, mu_norm, logits) -> the left y axis's limits, in the data's units.</param>
public sealed record ChartScale(bool LogY = false, IReadOnlyDictionary<string, (double Min, double Max)>? Ranges = null)
{
    /// <summary>--log-y and the --y-range CHART=MIN:MAX options; throws naming the option and value.</summary>
    public static ChartScale Parse(bool logY, IReadOnlyList<string> ranges, IReadOnlyCollection<string> charts)
    {
        var parsed = new Dictionary<string, (double, double)>();
        foreach (string item in ranges)
        {
            string[] parts = item.Split('=', ':');
            if (parts.Length != 3 || !charts.Contains(parts[0]) || !Number(parts[1], out double min) || !Number(parts[2], out double max) || !(min < max))
                throw new ArgumentException($"report --y-range: '{item}': expected CHART=MIN:MAX with MIN < MAX and CHART one of {string.Join(", ", charts)}, e.g. loss=2:6");
            if (logY && min <= 0) throw new ArgumentException($"report --y-range: '{item}': the log axis (--log-y) needs MIN > 0");
            parsed[parts[0]] = (min, max);
        }
        return new ChartScale(logY, parsed);
    }

    static bool Number(string text, out double value) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && double.IsFinite(value);

    /// <summary>A series as its axis draws it: on a log left axis, log10 of its positive values (the others are added
    /// to Dropped); otherwise as it is.</summary>
    public Series OnAxis(Series series, MetricsReport.Line line)
    {
        if (!LogY || line.RightAxis) return series;
        var kept = series.Values.Select((v, i) => (Step: series.Steps[i], Value: v)).Where(p => p.Value > 0).ToList();
        return new Series(series.Field, [.. kept.Select(p => p.Step)], [.. kept.Select(p => Math.Log10(p.Value))], series.Dropped + series.Values.Length - kept.Count);
    }

    /// <summary>The left y axis of `chart`: labelled in the data's units on a log axis, and clipped to its range.</summary>
    public void Apply(Plot plot, string chart)
    {
        if (LogY)
            plot.Axes.Left.TickGenerator = new NumericAutomatic
            {
                MinorTickGenerator = new LogMinorTickGenerator(), IntegerTicksOnly = true,
                LabelFormatter = y => Math.Pow(10, y).ToString("G3", CultureInfo.InvariantCulture),
            };
        if (Ranges?.TryGetValue(chart, out var range) != true) return;
        plot.Axes.AutoScale(); // the x axis and the right one as usual: set limits turn autoscaling off
        plot.Axes.SetLimitsY(LogY ? Math.Log10(range.Min) : range.Min, LogY ? Math.Log10(range.Max) : range.Max);
    }
}
