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

/// <summary>The cells of one preset and tying setting, by (method, learning rate, seed), with their L0; a sweep stopped
/// early lacks some. Seeds: [null] for a sweep without --seeds.</summary>
public sealed record SweepGroup(string Preset, bool WeightTying, InitialLoss Initial, IReadOnlyList<OecMethod> Methods,
    IReadOnlyList<double> Rates, IReadOnlyList<ulong?> Seeds, IReadOnlyDictionary<(OecMethod, double, ulong?), CellResult> Cells)
{
    public CellResult? Cell(OecMethod method, double lr, ulong? seed) => Cells.GetValueOrDefault((method, lr, seed));

    /// <summary>The finished cells of one method and learning rate, one per seed.</summary>
    public IReadOnlyList<CellResult> Seeded(OecMethod method, double lr) =>
        Seeds.Select(seed => Cell(method, lr, seed)).OfType<CellResult>().ToList();

    public bool Diverged(CellResult cell) => SweepReport.Diverged(cell, Initial.ValLoss);

    /// <summary>The loss as the LRS counts it: capped at L0, a non-finite one L0.</summary>
    public double Capped(CellResult cell) => double.IsFinite(cell.FinalValLoss) ? Math.Min(cell.FinalValLoss, Initial.ValLoss) : Initial.ValLoss;

    /// <summary>The published LRS of one seed over this group's learning rates (Oec.LearningRateSensitivity: non-finite
    /// losses and losses above L0 count as L0); null until every rate of that seed is finished.</summary>
    public double? Lrs(OecMethod method, ulong? seed) =>
        Rates.All(lr => Cell(method, lr, seed) is not null)
            ? LearningRateSensitivity.Compute(Rates.Select(lr => Cell(method, lr, seed)!.FinalValLoss).ToList(), Initial.ValLoss)
            : null;

    /// <summary>The LRS of every seed whose rates are all finished.</summary>
    public IReadOnlyList<double> SeedLrs(OecMethod method) => Seeds.Select(seed => Lrs(method, seed)).OfType<double>().ToList();

    public double MeanStepSeconds(OecMethod method) =>
        Rates.SelectMany(lr => Seeded(method, lr)).Select(c => c.StepSeconds).DefaultIfEmpty(double.NaN).Average();

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
        var groups = Groups(options, baseConfig.Train.Seed, results, initial);
        var written = new List<string>();
        foreach (var group in groups) written.AddRange(WriteCharts(outDir, group, width, height));
        string path = Path.Combine(outDir, FileName);
        string markdown = Markdown(groups, baseConfig, options);
        AtomicFile.Write(path, s => s.Write(Encoding.UTF8.GetBytes(markdown)));
        written.Insert(0, path);
        return written;
    }

    public static IReadOnlyList<SweepGroup> Groups(SweepOptions options, ulong baseSeed, IReadOnlyDictionary<SweepCell, CellResult> results,
        IReadOnlyDictionary<(string, bool), InitialLoss> initial) =>
        (from preset in options.Presets
         from tied in options.Tying
         select new SweepGroup(preset, tied, initial[(preset, tied)], options.Methods, options.LearningRates, options.CellSeeds(baseSeed),
             results.Where(r => r.Key.Preset == preset && r.Key.WeightTying == tied)
                 .ToDictionary(r => (r.Key.Method, r.Key.LearningRate, r.Key.Seed), r => r.Value))).ToList();

    static string Markdown(IReadOnlyList<SweepGroup> groups, RunConfig config, SweepOptions options)
    {
        var train = config.Train;
        int planned = groups.Sum(g => g.Methods.Count * g.Rates.Count * g.Seeds.Count), done = groups.Sum(g => g.Cells.Count);
        bool seeded = groups[0].Seeds.Count > 1 || groups[0].Seeds[0] is not null;
        var md = new StringBuilder();
        md.AppendLine("# Learning-rate sweep").AppendLine();
        md.AppendLine($"Written by `oecrun sweep` at {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC: {done} cells{(done < planned ? $" of {planned} (the sweep was stopped; the same command continues it; – marks a cell not finished yet)" : "")}, each an ordinary " +
                      $"training job in `cells/<name>/` ({options.Ranks} rank(s)); the base configuration they share is in `{SweepRun.ManifestFile}`. " +
                      $"Every cell: {train.Steps} steps of {train.BatchSize * train.GradAccum} x {train.SequenceLength} tokens, warmup {train.WarmupSteps} steps, " +
                      $"cosine decay to {SweepOptions.FormatRate(train.MinLearningRate)}, weight decay {F(train.WeightDecay)}, gradient clipping {F(train.GradClip)}, " +
                      $"precision {train.Precision.ToString().ToLowerInvariant()}, data {config.Data.Source}" +
                      (seeded ? $", seeds {string.Join(", ", groups[0].Seeds)} (train.seed: the initialisation and the batch order)." : $", seed {train.Seed}."));
        md.AppendLine();
        md.AppendLine($"- Loss: cross-entropy on the validation batches after the last step ({train.EvalBatches} batches of {train.BatchSize} x {train.SequenceLength} tokens), nats per token.");
        md.AppendLine($"- L0: the same validation loss of the untrained model (method none, the {(seeded ? "first seed" : "cells' seed")}), per preset and weight tying.");
        md.AppendLine($"- † {DivergenceRule}.");
        md.AppendLine("- LRS = (1/(N-1)) x sum over the N learning rates of [min(L(lr), L0) - min over lr' of min(L(lr'), L0)]; a diverged cell counts as L0. Lower is more stable.");
        if (seeded)
            md.AppendLine("- With several seeds: each loss is the mean over the seeds [min, max] of min(L, L0) (a diverged seed counts as L0; † k/N: k of the N seeds diverged); " +
                          "the LRS is computed per seed, then its mean, [min, max] and each seed's are given.");
        md.AppendLine("- Overhead: the mean seconds per step of the method's cells over that of none's, minus 1 (the training steps after the first logged row, validation and checkpoints not counted; " +
                      "cells ran side by side on a shared machine, so it carries that noise).");
        foreach (var g in groups) Group(md, g, seeded);
        return md.ToString();
    }

    static void Group(StringBuilder md, SweepGroup g, bool seeded)
    {
        md.AppendLine().AppendLine($"## {g.Title}: L0 = {g.Initial.ValLoss:F4} (ln V = {g.Initial.LnVocab:F4})").AppendLine();
        md.AppendLine($"Final validation loss (nats/token) per method and peak learning rate:").AppendLine();
        string lrsHeader = seeded ? "LRS | LRS [min, max] | LRS per seed" : "LRS";
        md.AppendLine($"| method | {string.Join(" | ", g.Rates.Select(SweepOptions.FormatRate))} | {lrsHeader} | overhead |");
        md.AppendLine($"|---|{string.Concat(g.Rates.Select(_ => "---:|"))}{(seeded ? "---:|---:|---|" : "---:|")}---:|");
        foreach (var m in g.Methods)
        {
            string overhead = g.Overhead(m) is double o && double.IsFinite(o) ? o.ToString("+0.0%;-0.0%", CultureInfo.InvariantCulture) : "n/a";
            var lrs = g.SeedLrs(m);
            string lrsCells = !seeded ? (lrs.Count == 1 ? $"{lrs[0]:F4}" : "n/a")
                : lrs.Count == 0 ? "n/a | n/a | n/a"
                : $"{lrs.Average():F4} | [{lrs.Min():F4}, {lrs.Max():F4}] | " +
                  string.Join(", ", g.Seeds.Select(seed => g.Lrs(m, seed) is double l ? $"{l:F4}" : "–"));
            md.AppendLine($"| {SweepOptions.MethodName(m)} | {string.Join(" | ", g.Rates.Select(lr => seeded ? Spread(g, g.Seeded(m, lr)) : Loss(g, g.Cell(m, lr, null))))} | {lrsCells} | {overhead} |");
        }
        var finished = g.Methods.SelectMany(m => g.Rates.Select(lr => (m, lr, Cells: g.Seeded(m, lr))))
            .Where(x => x.Cells.Count > 0 && !x.Cells.Any(g.Diverged)).ToList();   // none yet in a group a stopped sweep has not reached
        if (finished.Count > 0 && finished.MinBy(x => x.Cells.Average(c => c.FinalValLoss)) is var best)
            md.AppendLine().AppendLine($"Best: {SweepOptions.MethodName(best.m)} at {SweepOptions.FormatRate(best.lr)}, {best.Cells.Average(c => c.FinalValLoss):F4}{(seeded ? " (mean over its seeds)" : "")}.");
        md.AppendLine().AppendLine($"![final validation loss against the learning rate](loss_vs_lr_{g.FileSuffix}.png)");
        md.AppendLine($"![norm of mu against the learning rate](mu_norm_vs_lr_{g.FileSuffix}.png)");
        md.AppendLine($"![mean logit against the learning rate](mean_logit_vs_lr_{g.FileSuffix}.png)");
        md.AppendLine($"![max abs logit against the learning rate](max_abs_logit_vs_lr_{g.FileSuffix}.png)");
        md.AppendLine().AppendLine("Every finished cell at its last logged step:").AppendLine();
        md.AppendLine("| cell | steps | exit | final val loss | \\|\\|mu\\|\\| | mean logit | max \\|logit\\| | ms/step | wall s |");
        md.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var seed in g.Seeds)
            foreach (var m in g.Methods)
                foreach (var c in g.Rates.Select(lr => g.Cell(m, lr, seed)).OfType<CellResult>())
                    md.AppendLine($"| {c.Cell} | {c.Steps} | {c.ExitCode} | {Loss(g, c)} | {c.MuNorm:G4} | {c.MeanLogit:G4} | {c.MaxAbsLogit:G4} | " +
                                  $"{c.StepSeconds * 1000:F1} | {c.WallSeconds:F0} |");
    }

    static string Loss(SweepGroup g, CellResult? c) => c is null ? "–"
        : (double.IsFinite(c.FinalValLoss) ? c.FinalValLoss.ToString("F4", CultureInfo.InvariantCulture) : "NaN") + (g.Diverged(c) ? " †" : "");

    /// <summary>Mean [min, max] over the seeds' capped losses, † k/N when k of them diverged; – when none is finished.</summary>
    static string Spread(SweepGroup g, IReadOnlyList<CellResult> cells)
    {
        if (cells.Count == 0) return "–";
        var capped = cells.Select(g.Capped).ToList();
        int diverged = cells.Count(g.Diverged);
        return FormattableString.Invariant($"{capped.Average():F4} [{capped.Min():F4}, {capped.Max():F4}]") +
               (cells.Count < g.Seeds.Count ? $" ({cells.Count} of {g.Seeds.Count} seeds)" : "") + (diverged > 0 ? $" † {diverged}/{cells.Count}" : "");
    }

    static string F(double value) => value.ToString("G4", CultureInfo.InvariantCulture);

    /// <summary>The mean of the finite values over the seeds' cells; NaN when none is.</summary>
    static double MeanOverSeeds(IReadOnlyList<CellResult> cells, Func<CellResult, double> value) =>
        cells.Select(value).Where(double.IsFinite).DefaultIfEmpty(double.NaN).Average();

    /// <summary>One chart per quantity against the learning rate (log axis), a line per method in the method's colour
    /// (with several seeds, through the mean over the seeds).</summary>
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
                var finite = g.Rates.Select(lr => (X: Math.Log10(lr), Y: MeanOverSeeds(g.Seeded(m, lr), chart.Value))).Where(p => double.IsFinite(p.Y)).ToList();
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
