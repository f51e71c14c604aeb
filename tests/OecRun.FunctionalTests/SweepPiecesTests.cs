// `oecrun sweep --seeds --max-minutes` end to end: a tiny grid with two seeds swept in one go against the same grid
// advanced in pieces bounded by --max-minutes (cells stopped at a checkpoint and resumed): the same results.
using System.Globalization;
using Oec;
using OecRun.Launching;
using OecRun.Sweep;
using Rank.Configuration;
using Xunit.Abstractions;

namespace OecRun.FunctionalTests;

public class SweepPiecesTests(ITestOutputHelper output)
{
    /// <summary>1000 steps of the tiny model on 8 x 32 tokens, about 10 s a cell on an idle 2-core machine (4 s at 400 steps,
    /// where a bound of 4.8 s fell between cells: the first two finished and the next two had not begun to train), so
    /// that a bound of 4.8 s falls inside the first cells whether the machine is idle or loaded.</summary>
    static SweepOptions Options(string outDir, double? maxMinutes = null) => new()
    {
        Methods = [OecMethod.None], Tying = [false], LearningRates = [1e-3, 3e-2], Presets = ["tiny"], Parallel = 2,
        Seeds = SweepOptions.ParseSeeds("2"), MaxMinutes = maxMinutes, OutDir = outDir,
        Overrides = ["train.steps=1000", "train.warmup_steps=20", "train.batch_size=8", "train.sequence_length=32", "train.eval_every=200",
                     "train.eval_batches=2", "train.log_every=10", "data.synthetic_tokens=30000"],
    };

    async Task<string> Run(SweepOptions options)
    {
        var console = new StringWriter();
        int exit = await SweepRun.Run(options, Launch.SelfRankCommand(), TextWriter.Synchronized(console), CancellationToken.None).WaitAsync(TimeSpan.FromMinutes(3));
        output.WriteLine(console.ToString());
        Assert.Equal(0, exit);
        return console.ToString();
    }

    static readonly string[] Cells = ["tiny-untied-none-lr1e-3-s1337", "tiny-untied-none-lr3e-2-s1337", "tiny-untied-none-lr1e-3-s1338", "tiny-untied-none-lr3e-2-s1338"];

    static CellResult Result(string outDir, string cell) => CellResult.Read(Path.Combine(outDir, "cells", cell, CellResult.FileName));

    /// <summary>What a cell's training decides: everything but its times.</summary>
    static object Outcome(CellResult r) => (r.Cell, r.Seed, r.ExitCode, r.Steps, r.FinalValLoss, r.FinalTrainLoss, r.MuNorm, r.MeanLogit, r.MaxAbsLogit);

    [Fact]
    public async Task A_sweep_advanced_in_pieces_by_max_minutes_gives_the_results_of_one_run_and_each_seed_is_a_cell()
    {
        using var temp = new TempDirectory();
        string whole = temp.File("whole"), pieces = temp.File("pieces");
        await Run(Options(whole));

        // The same grid in pieces of 0.08 minutes (4.8 s; the grid takes 20 to 60 s here): each invocation stops its running
        // cells at a checkpoint.
        var logs = new List<string>();
        for (int piece = 0; piece < 40 && !File.Exists(Path.Combine(pieces, "cells", Cells[^1], CellResult.FileName)); piece++)
        {
            logs.Add(await Run(Options(pieces, maxMinutes: 0.08)));
            Assert.True(File.Exists(Path.Combine(pieces, SweepReport.FileName)) || !Cells.Any(c => File.Exists(Path.Combine(pieces, "cells", c, CellResult.FileName))),
                "results.md is written from the cells finished so far");
        }
        string all = string.Join("\n", logs);
        Assert.True(logs.Count > 1, "one bound of 4.8 s ran the whole grid: the test needs longer cells");
        Assert.Contains("stopped at --max-minutes", logs[0]);
        var resumedAt = System.Text.RegularExpressions.Regex.Matches(all, @"resumed from its checkpoint at step (\d+)")
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).ToList();
        Assert.Contains(resumedAt, step => step is > 0 and < 1000); // stopped inside a cell at least once

        foreach (string cell in Cells)
        {
            Assert.Equal(Outcome(Result(whole, cell)), Outcome(Result(pieces, cell)));
            Assert.False(Directory.Exists(Path.Combine(pieces, "cells", cell, "checkpoints")), $"{cell}: the stops' checkpoints are removed once it finished");
        }
        Assert.Equal(RankTable(whole), RankTable(pieces));

        // Each seed is train.seed of its cells, and the table gives the mean [min, max] over them and the LRS per seed.
        foreach (var (cell, seed) in new[] { (Cells[0], 1337UL), (Cells[2], 1338UL) })
            Assert.Equal(seed, RunConfig.FromJson(File.ReadAllText(Path.Combine(whole, "cells", cell, "config.json"))).Train.Seed);
        var losses = Cells.Select(c => Result(whole, c).FinalValLoss).ToArray();  // [lr1 s1, lr2 s1, lr1 s2, lr2 s2]
        Assert.NotEqual(losses[0], losses[2]);
        var initial = InitialLoss.Read(Path.Combine(whole, "initial", "tiny-untied.json")).ValLoss;
        string row = File.ReadAllLines(Path.Combine(whole, SweepReport.FileName)).First(l => l.StartsWith("| none |"));
        Assert.Contains(FormattableString.Invariant($"| {(losses[0] + losses[2]) / 2:F4} [{Math.Min(losses[0], losses[2]):F4}, {Math.Max(losses[0], losses[2]):F4}] |"), row);
        double lrs1 = LearningRateSensitivity.Compute([losses[0], losses[1]], initial), lrs2 = LearningRateSensitivity.Compute([losses[2], losses[3]], initial);
        Assert.Contains(FormattableString.Invariant($"| {(lrs1 + lrs2) / 2:F4} | [{Math.Min(lrs1, lrs2):F4}, {Math.Max(lrs1, lrs2):F4}] | {lrs1:F4}, {lrs2:F4} |"), row);
    }

    /// <summary>results.md's tables without what timing decides (the overhead column, ms/step, wall s, the time written).</summary>
    static List<string> RankTable(string outDir) =>
        File.ReadAllLines(Path.Combine(outDir, SweepReport.FileName))
            .Where(l => l.StartsWith("| ")).Select(l => string.Join("|", l.Split('|').SkipLast(l.StartsWith("| tiny-") ? 3 : 2))).ToList();
}
