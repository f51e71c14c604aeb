// The sweep's report: results.md (per preset and tying, methods x learning rates, LRS and step-time overhead) and
// charts against the learning rate in the manner of the paper's figures, in the style of `oecrun report`.
using Job;
using System.Globalization;
using System.Text;
using Oec;
using Rank.Configuration;
using OecRun.Reporting;
using ScottPlot;

namespace OecRun.Sweep;

/// <summary>The cells of one preset and tying setting, by (method, learning rate), with their L0.</summary>
public sealed record SweepGroup(string Preset, bool WeightTying, InitialLoss Initial, IReadOnlyList<OecMethod> Methods,
    IReadOnlyList<double> Rates, IReadOnlyDictionary<(OecMethod, double), CellResult> Cells)
{
    public CellResult this[OecMethod method, double lr] => Cells[(method, lr)];

    public bool Diverged(CellResult cell) => SweepReport.Diverged(cell, Initial.ValLoss);

    /// <summary>The published LRS over this group's learning rates (Oec.LearningRateSensitivity: non-finite losses and
    /// losses above L0 count as L0).</summary>
    public double Lrs(OecMethod method) => LearningRateSensitivity.Compute(Rates.Select(lr => this[method, lr].FinalValLoss).ToList(), Initial.ValLoss);

    public double MeanStepSeconds(OecMethod method) => Rates.Average(lr => this[method, lr].StepSeconds);

    /// <summary>Mean step time over that of none, minus 1; null when the sweep has no none.</summary>
    public double? Overhead(OecMethod method) => Methods.Contains(OecMethod.None) ? MeanStepSeconds(method) / MeanStepSeconds(OecMethod.None) - 1 : null;

    public string Title => $"{Preset}, {SweepCell.Tying(WeightTying)}";
    public string FileSuffix => $"{Preset}_{SweepCell.Tying(WeightTying)}";
}

public static class SweepReport
{
    public const string FileName = "results.md";
    public const string DivergenceRule = "diverged: the final validation loss is non-finite (the job stopped on a non-finite training loss, exit code 3) or above L0";

    public static bool Diverged(CellResult cell, double initialLoss) => !double.IsFinite(cell.FinalValLoss) || cell.FinalValLoss > initialLoss;

    /// <summary>Writes results.md and, per preset and tying, four charts against the learning rate into outDir;
    /// returns the written files.</summary>
    public static IReadOnlyList<string> Write(string outDir, SweepOptions options, RunConfig baseConfig,
        IReadOnlyDictionary<SweepCell, CellResult> results, IReadOnlyDictionary<(string, bool), InitialLoss> initial, int width = 1200, int height = 800)
    {
        MetricsReport.CheckFonts();
        var groups = Groups(options, results, initial);
        var written = new List<string>();
        foreach (var group in groups) written.AddRange(WriteCharts(outDir, group, width, height));
        string path = Path.Combine(outDir, FileName);
        string markdown = Markdown(groups, baseConfig, options);
        AtomicFile.Write(path, s => s.Write(Encoding.UTF8.GetBytes(markdown)));
        written.Insert(0, path);
        return written;
    }

    public static IReadOnlyList<SweepGroup> Groups(SweepOptions options, IReadOnlyDictionary<SweepCell, CellResult> results,
        IReadOnlyDictionary<(string, bool), InitialLoss> initial) =>
        (from preset in options.Presets
         from tied in options.Tying
         select new SweepGroup(preset, tied, initial[(preset, tied)], options.Methods, options.LearningRates,
             results.Where(r => r.Key.Preset == preset && r.Key.WeightTying == tied)
                 .ToDictionary(r => (r.Key.Method, r.Key.LearningRate), r => r.Value))).ToList();

    static string Markdown(IReadOnlyList<SweepGroup> groups, RunConfig config, SweepOptions options)
    {
        var train = config.Train;
        var md = new StringBuilder();
        md.AppendLine("# Learning-rate sweep").AppendLine();
        md.AppendLine($"Written by `oecrun sweep` at {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC: {groups.Sum(g => g.Cells.Count)} cells, each an ordinary " +
                      $"training job in `cells/<name>/` ({options.Ranks} rank(s)); the base configuration they share is in `{SweepRun.ManifestFile}`. " +
                      $"Every cell: {train.Steps} steps of {train.BatchSize * train.GradAccum} x {train.SequenceLength} tokens, warmup {train.WarmupSteps} steps, " +
                      $"cosine decay to {SweepOptions.FormatRate(train.MinLearningRate)}, weight decay {F(train.WeightDecay)}, gradient clipping {F(train.GradClip)}, data {config.Data.Source}.");
        md.AppendLine();
        md.AppendLine($"- Loss: cross-entropy on the validation batches after the last step ({train.EvalBatches} batches of {train.BatchSize} x {train.SequenceLength} tokens), nats per token.");
        md.AppendLine("- L0: the same validation loss of the untrained model (method none, the cells' seed), per preset and weight tying.");
        md.AppendLine($"- † {DivergenceRule}.");
        md.AppendLine("- LRS = (1/(N-1)) x sum over the N learning rates of [min(L(lr), L0) - min over lr' of min(L(lr'), L0)]; a diverged cell counts as L0. Lower is more stable.");
        md.AppendLine("- Overhead: the mean seconds per step of the method's cells over that of none's, minus 1 (step_seconds of the logged steps after the first; " +
                      "cells ran side by side on a shared machine, so it carries that noise).");
        foreach (var g in groups)
        {
            md.AppendLine().AppendLine($"## {g.Title}: L0 = {g.Initial.ValLoss:F4} (ln V = {g.Initial.LnVocab:F4})").AppendLine();
            md.AppendLine($"Final validation loss (nats/token) per method and peak learning rate:").AppendLine();
            md.AppendLine($"| method | {string.Join(" | ", g.Rates.Select(SweepOptions.FormatRate))} | LRS | overhead |");
            md.AppendLine($"|---|{string.Concat(g.Rates.Select(_ => "---:|"))}---:|---:|");
            foreach (var m in g.Methods)
            {
                string overhead = g.Overhead(m) is double o ? o.ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture) : "n/a";
                md.AppendLine($"| {SweepOptions.MethodName(m)} | {string.Join(" | ", g.Rates.Select(lr => Loss(g, g[m, lr])))} | {g.Lrs(m):F4} | {overhead} |");
            }
            var best = g.Methods.SelectMany(m => g.Rates.Select(lr => g[m, lr])).Where(c => !g.Diverged(c)).MinBy(c => c.FinalValLoss);
            if (best is not null) md.AppendLine().AppendLine($"Best: {best.Method} at {SweepOptions.FormatRate(best.LearningRate)}, {best.FinalValLoss:F4}.");
            md.AppendLine().AppendLine($"![final validation loss against the learning rate](loss_vs_lr_{g.FileSuffix}.png)");
            md.AppendLine($"![norm of mu against the learning rate](mu_norm_vs_lr_{g.FileSuffix}.png)");
            md.AppendLine($"![mean logit against the learning rate](mean_logit_vs_lr_{g.FileSuffix}.png)");
            md.AppendLine($"![max abs logit against the learning rate](max_abs_logit_vs_lr_{g.FileSuffix}.png)");
            md.AppendLine().AppendLine("Every cell at its last logged step:").AppendLine();
            md.AppendLine("| cell | steps | exit | final val loss | \\|\\|mu\\|\\| | mean logit | max \\|logit\\| | ms/step | wall s |");
            md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var m in g.Methods)
                foreach (var c in g.Rates.Select(lr => g[m, lr]))
                    md.AppendLine($"| {c.Cell} | {c.Steps} | {c.ExitCode} | {Loss(g, c)} | {c.MuNorm:G4} | {c.MeanLogit:G4} | {c.MaxAbsLogit:G4} | " +
                                  $"{c.StepSeconds * 1000:F1} | {c.WallSeconds:F0} |");
        }
        return md.ToString();
    }

    static string Loss(SweepGroup g, CellResult c) => (double.IsFinite(c.FinalValLoss) ? c.FinalValLoss.ToString("F4", CultureInfo.InvariantCulture) : "NaN") +
                                                       (g.Diverged(c) ? " †" : "");

    static string F(double value) => value.ToString("G4", CultureInfo.InvariantCulture);

    /// <summary>One chart per quantity against the learning rate (log axis), a line per method in the method's colour.</summary>
    static IEnumerable<string> WriteCharts(string outDir, SweepGroup g, int width, int height)
    {
        // Non-finite values (a diverged cell's statistics) are left out of the lines.
        var charts = new (string File, string Title, string YAxis, Func<CellResult, double> Value)[]
        {
            ("loss_vs_lr", $"Final validation loss, {g.Title} (capped at L0 as in the LRS)", "cross-entropy (nats per token)",
                c => double.IsFinite(c.FinalValLoss) ? Math.Min(c.FinalValLoss, g.Initial.ValLoss) : g.Initial.ValLoss),
            ("mu_norm_vs_lr", $"||mu|| at the end, {g.Title}", "||mu|| (L2 norm, embedding units)", c => c.MuNorm),
            ("mean_logit_vs_lr", $"Mean logit at the end, {g.Title}", "mean logit (nats)", c => c.MeanLogit),
            ("max_abs_logit_vs_lr", $"Max |logit| at the end, {g.Title}", "max |logit| (nats)", c => c.MaxAbsLogit),
        };
        foreach (var chart in charts)
        {
            using var plot = MetricsReport.NewChart(chart.Title, chart.YAxis);
            plot.XLabel("peak learning rate (log scale)");
            var ticks = new ScottPlot.TickGenerators.NumericManual();
            foreach (double lr in g.Rates) ticks.AddMajor(Math.Log10(lr), SweepOptions.FormatRate(lr));
            plot.Axes.Bottom.TickGenerator = ticks;
            if (chart.File == "loss_vs_lr")
            {
                var l0 = plot.Add.HorizontalLine(g.Initial.ValLoss, 1, Colors.Gray, LinePattern.Dashed);
                l0.LegendText = "L0 (untrained)";
            }
            for (int k = 0; k < g.Methods.Count; k++)
            {
                var m = g.Methods[k];
                var finite = g.Rates.Select(lr => (X: Math.Log10(lr), Y: chart.Value(g[m, lr]))).Where(p => double.IsFinite(p.Y)).ToList();
                if (finite.Count == 0) continue;
                var line = plot.Add.Scatter(finite.Select(p => p.X).ToArray(), finite.Select(p => p.Y).ToArray(), MetricsReport.RunColor((int)m));
                line.LegendText = SweepOptions.MethodName(m);
                // Earlier methods drawn wider, so that methods with equal values (none and mu-centering without tying)
                // show as nested stripes instead of one hiding the other. Pixels.
                line.LineWidth = 2 + 2.5f * (g.Methods.Count - 1 - k);
                line.MarkerSize = 7 + 4 * (g.Methods.Count - 1 - k);
            }
            string path = Path.Combine(outDir, $"{chart.File}_{g.FileSuffix}.png");
            MetricsReport.SavePng(plot, path, width, height);
            yield return path;
        }
    }
}
