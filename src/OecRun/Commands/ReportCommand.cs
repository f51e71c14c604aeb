// `oecrun report`: plot runs' metrics logs into PNG charts.
using System.CommandLine;
using OecRun.Reporting;

namespace OecRun.Commands;

public static class ReportCommand
{
    /// <summary>The command's options: the runs, where the charts go (null: the first run's directory), their size in pixels.</summary>
    public sealed record Options(IReadOnlyList<string> Runs, string? OutDir = null, int Width = 1200, int Height = 800, bool LogY = false, IReadOnlyList<string>? YRanges = null);

    // The charts --y-range names, by their files' stems.
    static readonly string[] Charts = ["loss", "mu_norm", "logits"];

    public static Command Create()
    {
        var command = new Command("report", "Plot runs' metrics logs, every run on each chart: loss.png (train and val loss), mu_norm.png (||mu||), " +
                                            "logits.png (mean logit, max |logit|), and where a log holds the mechanism measures identity.png (mean logit against mu . h) " +
                                            "and ratios.png (r_log, r_emb). Non-finite values are left out and counted.");
        var b = new OptionBinder<Options>(command, new Options([]));
        b.Add(new Argument<string[]>("runs") { Description = "Run directories holding metrics.jsonl, or metrics.jsonl files; each run is named after its directory.", Arity = ArgumentArity.OneOrMore },
            (o, v) => o with { Runs = v });
        b.Add(new Option<string?>("--out") { Description = "Folder for the PNGs (default: the first run's directory)." }, (o, v) => o with { OutDir = v is null ? null : CommandLine.OutputDirectory(v, "--out") });
        b.Add(new Option<int>("--width") { Description = "Width of each PNG in pixels.", DefaultValueFactory = _ => b.Defaults.Width }, (o, v) => o with { Width = v });
        b.Add(new Option<int>("--height") { Description = "Height of each PNG in pixels.", DefaultValueFactory = _ => b.Defaults.Height }, (o, v) => o with { Height = v });
        b.Add(new Option<bool>("--log-y") { Description = "Left y axes in log scale (non-positive values left out): a diverged run's growth no longer flattens the others." },
            (o, v) => o with { LogY = v });
        b.Add(new Option<string[]>("--y-range") { Description = $"CHART=MIN:MAX: clip that chart's left y axis, CHART one of {string.Join(", ", Charts)} (repeatable), e.g. loss=2:6." },
            (o, v) => o with { YRanges = v });
        command.SetGuardedAction(parse =>
        {
            var o = b.Bind(parse);
            var scale = ChartScale.Parse(o.LogY, o.YRanges ?? [], Charts);
            foreach (string path in MetricsReport.Write(o.Runs, o.OutDir, o.Width, o.Height, Console.Out, scale))
                Console.WriteLine($"wrote {path}");
            return 0;
        });
        return command;
    }
}
