// `oecrun report`: the metrics logs of one or more runs as PNG charts (ScottPlot), every run on each chart with the steps
// a rollback undid dotted and a marker where it went back to, and the chart style later reports share.
using Job;
using Rank.Training;
using ScottPlot;
using SkiaSharp;

namespace OecRun.Reporting;

public static class MetricsReport
{
    public const int MinPixels = 100, MaxPixels = 10_000;
    const string StepAxis = "step (optimizer steps)";

    /// <summary>Reads every run's log, prints per run how many non-finite values the charts leave out, and writes
    /// loss.png, mu_norm.png and logits.png (width x height pixels) into outDir (null: the first run's directory), and
    /// identity.png and ratios.png when a log holds the mechanism measures (mean_mu_dot_h, r_emb_mean).</summary>
    /// <returns>The written files, in that order.</returns>
    public static IReadOnlyList<string> Write(IReadOnlyList<string> runs, string? outDir, int width, int height, TextWriter console, ChartScale? scale = null)
    {
        scale ??= new ChartScale();
        if (runs.Count == 0) throw new ArgumentException("report: give at least one run directory or metrics.jsonl");
        CheckPixels("--width", width);
        CheckPixels("--height", height);
        CheckFonts();
        var read = Named(runs.Select(RunMetrics.Read).ToList());
        outDir ??= RunMetrics.RunDirectory(read[0].LogPath);

        var charts = new (string File, string Title, string YAxis, string? RightAxis, Line[] Lines)[]
        {
            ("loss.png", "Loss", "cross-entropy (nats per token)", null,
                [new("train", "train_loss", m => m.TrainLoss), new("val", "val_loss", m => m.ValLoss, LinePattern.Dashed, Markers: true)]),
            ("mu_norm.png", "||mu||, mu = mean row of the output embedding", "||mu|| (L2 norm, embedding units)", null,
                [new("", "mu_norm", m => m.MuNorm)]),
            // Two axes: a diverging max |logit| would flatten the mean logit (near 0 under mu-centering) on a shared one.
            ("logits.png", "Logits", "max |logit| (nats, solid)", "mean logit (nats, dashed)",
                [new("max |logit|", "max_abs_logit", m => m.MaxAbsLogit), new("mean logit", "mean_logit", m => m.MeanLogit, LinePattern.Dashed, RightAxis: true)]),
        };
        if (read.Any(r => r.Steps.Any(m => m.MeanMuDotH is not null || m.REmbMean is not null))) charts = [.. charts, .. MechanismCharts];
        var dropped = read.Select(_ => new List<string>()).ToArray(); // per run: "field count"
        var written = new List<string>();
        foreach (var chart in charts)
        {
            using var plot = NewChart(chart.Title, chart.YAxis, chart.RightAxis);
            for (int r = 0; r < read.Count; r++)
            {
                foreach (var line in chart.Lines)
                {
                    var series = scale.OnAxis(read[r].Points(line.Field, line.Value), line);
                    if (series.Dropped > 0) dropped[r].Add($"{series.Field} {series.Dropped}");
                    AddLine(plot, series, $"{read[r].Name} {line.Label}".TrimEnd(), RunColor(r), line);
                }
                AddRolledBack(plot, read[r], RunColor(r), chart.Lines, scale);
            }
            scale.Apply(plot, Path.GetFileNameWithoutExtension(chart.File));
            string path = Path.Combine(outDir, chart.File);
            SavePng(plot, path, width, height);
            written.Add(path);
        }
        for (int r = 0; r < read.Count; r++)
            console.WriteLine($"{read[r].Name}: {read[r].Steps.Count} logged steps from {read[r].LogPath}" + RolledBackSummary(read[r]) +
                              (dropped[r].Count > 0 ? $"; non-finite{(scale.LogY ? " or non-positive (log axis)" : "")} values left out: {string.Join(", ", dropped[r])}" : ""));
        return written;
    }

    /// <summary>The paper's mechanism measures, drawn when a log has them: the mean logit against mu . h (the identity
    /// mean_j l_j = mu . h; the two lines part where the logits as computed lose it), and the ratios r_log and r_emb
    /// (near 0: one common shift, mu, dominates the logits and the rows of E).</summary>
    static readonly (string File, string Title, string YAxis, string? RightAxis, Line[] Lines)[] MechanismCharts =
    [
        ("identity.png", "Mean logit against mu . h", "nats (mean over tokens)", null,
            [new("mean logit", "mean_logit", m => m.MeanLogit), new("mu . h", "mean_mu_dot_h", m => m.MeanMuDotH, LinePattern.Dashed)]),
        ("ratios.png", "r_log and r_emb", "ratio", null,
            [new("r_log", "r_log", m => m.RLog), new("r_emb mean", "r_emb_mean", m => m.REmbMean, LinePattern.Dashed),
             new("r_emb min", "r_emb_min", m => m.REmbMin, LinePattern.Dotted)]),
    ];

    /// <summary>Run r's colour on every chart (ScottPlot's Category10 palette).</summary>
    public static Color RunColor(int r) => new ScottPlot.Palettes.Category10().GetColor(r);

    /// <summary>How one field is drawn: a line of the run's colour in this pattern, with markers where the field is sparse
    /// (val loss), on the right y axis where its scale differs from the left one's.</summary>
    public sealed record Line(string Label, string Field, Func<StepMetrics, double?> Value,
        LinePattern? Pattern = null, bool Markers = false, bool RightAxis = false);

    /// <summary>A chart over steps in a sans-serif font, the legend outside the data on the right; a right y axis when
    /// rightAxis names one.</summary>
    public static Plot NewChart(string title, string yAxis, string? rightAxis = null)
    {
        var plot = new Plot();
        plot.Font.Set(SansFont.Value);
        plot.Title(title);
        plot.XLabel(StepAxis);
        plot.YLabel(yAxis);
        if (rightAxis is not null) plot.Axes.Right.Label.Text = rightAxis;
        plot.ShowLegend(Edge.Right);
        return plot;
    }

    /// <summary>Adds one series; a series without points adds nothing, not even a legend entry.</summary>
    public static void AddLine(Plot plot, Series series, string legend, Color color, Line style)
    {
        if (series.Steps.Length == 0) return;
        var line = plot.Add.Scatter(series.Steps, series.Values, color);
        line.LegendText = legend;
        line.LineWidth = 2;
        line.LinePattern = style.Pattern ?? LinePattern.Solid;
        line.MarkerSize = style.Markers ? 6 : 0;
        if (style.RightAxis) line.Axes.YAxis = plot.Axes.Right;
    }

    /// <summary>The run's rolled-back steps: each pass dotted in the run's colour, and a dashed vertical line at each step
    /// the run went back to; one legend entry for each kind.</summary>
    static void AddRolledBack(Plot plot, RunMetrics run, Color color, Line[] lines, ChartScale scale)
    {
        for (int pass = 0; pass < run.RolledBack.Count; pass++)
            foreach (var line in lines)
            {
                var series = scale.OnAxis(RunMetrics.PointsOf(run.RolledBack[pass], line.Field, line.Value), line);
                string legend = pass == 0 && line == lines[0] ? $"{run.Name} rolled back" : "";
                AddLine(plot, series, legend, color.WithAlpha(0.6), line with { Pattern = LinePattern.Dotted });
            }
        var backTo = run.RolledBack.SelectMany(p => p).Select(m => m.RolledBackTo!.Value).Distinct().Order().ToList();
        for (int i = 0; i < backTo.Count; i++)
            plot.Add.VerticalLine(backTo[i], 2, color, LinePattern.Dashed).LegendText = i == 0 ? $"{run.Name} rolled back to" : "";
    }

    static string RolledBackSummary(RunMetrics run) => run.RolledBack.Count == 0 ? "" :
        $"; {run.RolledBack.Sum(p => p.Count)} rolled-back steps drawn dotted (went back to step " +
        $"{string.Join(", ", run.RolledBack.SelectMany(p => p).Select(m => m.RolledBackTo).Distinct().Order())})";

    /// <summary>Renders to PNG and writes it through a temporary name, so `path` is never a half-written file.</summary>
    public static void SavePng(Plot plot, string path, int width, int height)
    {
        using var image = plot.GetImage(width, height);
        byte[] png = image.GetImageBytes(ImageFormat.Png);
        AtomicFile.Write(path, s => s.Write(png));
    }

    static void CheckPixels(string option, int pixels)
    {
        if (pixels < MinPixels || pixels > MaxPixels)
            throw new ArgumentException($"report {option}: {pixels} pixels is outside {MinPixels}..{MaxPixels}");
    }

    /// <summary>A sans-serif family that is installed: Skia's default on Linux is the first file it finds, often a serif one.</summary>
    static readonly Lazy<string> SansFont = new(() =>
    {
        var installed = SKFontManager.Default.FontFamilies.ToHashSet(StringComparer.OrdinalIgnoreCase);
        string[] preferred = ["DejaVu Sans", "Liberation Sans", "Noto Sans", "Open Sans", "Arial", "Helvetica"];
        return preferred.FirstOrDefault(installed.Contains)
               ?? installed.FirstOrDefault(f => f.Contains("Sans") && !f.Contains("Mono"))
               ?? SKTypeface.Default.FamilyName;
    });

    /// <summary>Skia's Linux build reads fonts from /usr/share/fonts; without one every label would be missing.</summary>
    public static void CheckFonts()
    {
        if (SKFontManager.Default.FontFamilyCount == 0)
            throw new InvalidOperationException("report: no font under /usr/share/fonts, the charts would have no text; " +
                                                "install one, e.g. apt-get install fonts-dejavu-core");
    }

    /// <summary>Runs whose directory names collide (a/lr_1e-3, b/lr_1e-3) are named by their directory path instead.</summary>
    static List<RunMetrics> Named(List<RunMetrics> runs) =>
        runs.Select(r => runs.Count(o => o.Name == r.Name) == 1 ? r
                : r with { Name = Path.GetRelativePath(Environment.CurrentDirectory, RunMetrics.RunDirectory(r.LogPath)) })
            .ToList();
}
