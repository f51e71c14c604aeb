// `oecrun sweep`'s options in process: the base configuration, the cells' share of the cores, and clear errors for bad
// options; the sweeps that run real jobs are in OecRun.FunctionalTests.
using Job;
using Oec;
using OecRun.Sweep;
using Rank.Training;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class SweepTests
{
    [Fact]
    public void The_base_configuration_is_the_sweeps_defaults_under_the_file_under_the_overrides()
    {
        using var temp = new TempDirectory();
        string file = temp.File("base.json");
        File.WriteAllText(file, """{ "train": { "steps": 600, "eval_every": 200 }, "data": { "synthetic_tokens": 50000 } }""");
        var options = new SweepOptions { OutDir = temp.File("sweep"), ConfigFile = file, Overrides = ["train.eval_every=150"], Ranks = 2 };

        var config = options.BaseConfig();

        Assert.Equal((600, 150, 50_000L), (config.Train.Steps, config.Train.EvalEvery, config.Data.SyntheticTokens)); // file, override, file
        Assert.Equal((60, 20, 0), (config.Train.WarmupSteps, config.Train.LogEvery, config.Job.CheckpointEvery));      // the sweep's defaults
        Assert.Equal((2, DivergenceAction.Warn), (config.Job.WorldSize, config.Divergence.Action));
        var cell = options.CellConfig(new SweepCell("small", true, OecMethod.ZLoss, 0.03), temp.File("cell"), threads: 1);
        Assert.Equal((4, 128, true, OecMethod.ZLoss, 0.03, 600, 1), (cell.Model.NLayer, cell.Model.DModel, cell.Model.WeightTying, cell.Oec.Method,
            cell.Train.LearningRate, cell.Train.Steps, cell.Train.Threads));
    }

    [Fact]
    public void The_report_of_a_sweep_stopped_before_a_group_had_a_cell_shows_that_group_empty()
    {
        using var temp = new TempDirectory();
        var options = new SweepOptions { OutDir = temp.Path, Methods = [OecMethod.None, OecMethod.MuCentering], LearningRates = [1e-3, 3e-3] }.Validated();
        var cell = new SweepCell("tiny", false, OecMethod.None, 1e-3);
        var now = DateTime.UtcNow;
        var results = new Dictionary<SweepCell, CellResult>
        {
            [cell] = new(cell.Name, "tiny", false, "none", 1e-3, 0, 600, 3.5, 3.4, 1.2, -0.1, 9.5, 0.05, 40, now, now),
        };
        var initial = new[] { false, true }.ToDictionary(tied => ("tiny", tied), tied => new InitialLoss("tiny", tied, 6.25, 4, Math.Log(512)));

        SweepReport.Write(temp.Path, options, options.BaseConfig(), results, initial, width: 300, height: 200);   // the tied group has no cell

        string markdown = File.ReadAllText(temp.File(SweepReport.FileName));
        Assert.Contains("1 cells of 8 (the sweep was stopped", markdown);
        Assert.Contains("Best: none at 1e-3, 3.5000.", markdown);                                  // the untied group
        Assert.Contains("| none | – | – |", markdown[markdown.IndexOf("## tiny, tied", StringComparison.Ordinal)..]);
    }

    [Fact]
    public void A_sweep_directory_continues_only_under_its_base_configuration_and_an_option_added_since_counts_as_its_default()
    {
        using var temp = new TempDirectory();
        var config = new SweepOptions { OutDir = temp.Path }.BaseConfig();
        SweepRun.CheckManifest(temp.Path, config);                                  // writes sweep.json
        string path = temp.File(SweepRun.ManifestFile);
        SweepRun.CheckManifest(temp.Path, config);

        var e = Assert.Throws<ArgumentException>(() => SweepRun.CheckManifest(temp.Path, config with { Train = config.Train with { LearningRate = 0.5 } }));
        Assert.Contains($"train.learning_rate = {config.Train.LearningRate} there, 0.5 now", e.Message);

        // As written by an oecrun that had no job.startup_timeout_s: the default (0) now.
        var manifest = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!;
        Assert.True(manifest["base"]!["job"]!.AsObject().Remove("startup_timeout_s"));
        File.WriteAllText(path, manifest.ToJsonString());
        SweepRun.CheckManifest(temp.Path, config);
        e = Assert.Throws<ArgumentException>(() => SweepRun.CheckManifest(temp.Path, config with { Job = config.Job with { StartupTimeoutS = 60 } }));
        Assert.Contains("job.startup_timeout_s = 0 there, 60 now", e.Message);
    }

    [Fact]
    public void Cells_share_the_cores_on_CPUs_and_run_one_at_a_time_on_GPUs_unless_parallel_is_given()
    {
        var options = new SweepOptions { OutDir = "sweep", Ranks = 2 };

        Assert.Equal((8, 1), options.Concurrency(baseThreads: 0, cores: 16));            // 8 cells x 2 ranks x 1 thread
        Assert.Equal((2, 4), options.Concurrency(baseThreads: 4, cores: 16));            // 2 cells x 2 ranks x 4 threads
        Assert.Equal((1, 1), options.Concurrency(baseThreads: 0, cores: 16, gpu: true)); // every cell's ranks on cuda:0..1
        Assert.Equal((3, 2), (options with { Parallel = 3 }).Concurrency(baseThreads: 0, cores: 16, gpu: true));
    }

    [Fact]
    public void Seeds_make_one_cell_per_seed_named_by_it_with_its_train_seed_and_every_cell_resumes_from_its_checkpoint()
    {
        var options = new SweepOptions { OutDir = "sweep", Methods = [OecMethod.None, OecMethod.MuCentering], Tying = [false], LearningRates = [1e-3, 1e-2] };

        Assert.Equal(["tiny-untied-none-lr1e-3", "tiny-untied-mu_centering-lr1e-3"], options.Cells(baseSeed: 7).Take(2).Select(c => c.Name));
        var seeded = (options with { Seeds = SweepOptions.ParseSeeds("3") }).Cells(baseSeed: 7);
        Assert.Equal(12, seeded.Count);
        Assert.Equal([7UL, 7, 7, 7, 8, 8, 8, 8, 9, 9, 9, 9], seeded.Select(c => c.Seed!.Value)); // whole grids seed by seed
        Assert.Equal("tiny-untied-mu_centering-lr1e-2-s9", seeded[^1].Name);
        Assert.Equal([11UL, 5], (options with { Seeds = SweepOptions.ParseSeeds("11,5") }).Cells(0).Select(c => c.Seed!.Value).Distinct());

        using var temp = new TempDirectory();
        var config = (options with { OutDir = temp.File("sweep") }).CellConfig(seeded[^1], temp.File("cell"), threads: 1);
        Assert.Equal((9UL, ResumeMode.Auto), (config.Train.Seed, config.Job.Resume));
        Assert.Equal(1337UL, (options with { OutDir = temp.File("sweep") }).CellConfig(options.Cells(1337)[0], temp.File("cell"), threads: 1).Train.Seed);
    }

    /// <summary>The overrides of the 16M GPU sweep in docs/results.md.</summary>
    static readonly string[] PaperShapeOnAGpu =
    [
        "train.device=cuda", "train.precision=bf16", "train.sequence_length=2048", "train.batch_size=16", "train.grad_accum=4",
        "train.steps=2000", "train.warmup_steps=100", "train.eval_every=500", "train.eval_batches=8", "train.log_every=50",
        "data.vocab_size=50304", "data.synthetic_tokens=100000000",
    ];

    [Fact]
    public void The_documented_GPU_sweep_is_the_papers_16M_shape_batch_and_schedule_scaled_to_its_steps()
    {
        using var temp = new TempDirectory();
        var options = new SweepOptions { OutDir = temp.File("sweep"), Presets = ["16M"], Tying = [false], Overrides = PaperShapeOnAGpu, MaxMinutes = 9 }.Validated();

        var cell = options.CellConfig(options.Cells(options.BaseConfig().Train.Seed)[0], temp.File("cell"), threads: 1);

        var (model, train) = (cell.Model.Resolve(), cell.Train);
        Assert.Equal((6, 224, 4), (model.NLayer!.Value, model.DModel!.Value, model.NHead!.Value));
        Assert.Equal((50304, 50304), (cell.Data.ResolvedVocabSize, model.PaddedVocab(cell.Data.ResolvedVocabSize)));
        Assert.Equal((2048, 64 * 2048), (train.SequenceLength, train.BatchSize * train.GradAccum * train.SequenceLength)); // the paper's 64 x 2048 tokens a step
        Assert.Equal(0.05, (double)train.WarmupSteps / train.Steps);                                                      // the paper's 5000 of 100,000
        Assert.Equal((Precision.Bf16, "cuda", 1e-5), (train.Precision, train.Device, train.MinLearningRate));
        Assert.Equal(1, options.Concurrency(train.Threads, cores: 16, gpu: true).Parallel);
    }

    [Theory]
    [InlineData("--seeds 0", "--seeds 0: a count of seeds must be 1 to 1000")]
    [InlineData("--seeds 2,x", "--seeds: 'x': not a whole number >= 0")]
    [InlineData("--seeds -1", "--seeds: '-1': not a whole number >= 0")]
    [InlineData("--seeds 4,4", "--seeds: '4' is given twice")]
    [InlineData("--max-minutes 0", "--max-minutes = 0: must be a number of minutes > 0")]
    [InlineData("--max-minutes -2", "--max-minutes = -2: must be a number of minutes > 0")]
    [InlineData("--max-minutes NaN", "--max-minutes = NaN: must be a number of minutes > 0")]
    [InlineData("--methods none,bogus", "--methods: 'bogus': unknown, expected one of none, z_loss, soft_cap, mu_loss, mu_centering")]
    [InlineData("--methods none,none", "--methods: 'none' is given twice")]
    [InlineData("--tying maybe", "--tying: 'maybe': expected false or true")]
    [InlineData("--learning-rates 1e-3", "needs at least 2 learning rates, got 1")]
    [InlineData("--learning-rates 1e-3,abc", "--learning-rates: 'abc': not a number")]
    [InlineData("--learning-rates 1e-3,-1", "--learning-rates: -1: must be finite and > 0")]
    [InlineData("--presets huge", "--presets: 'huge': unknown, expected one of")]
    [InlineData("--ranks 0", "--ranks = 0: must be >= 1")]
    [InlineData("--parallel 0", "--parallel = 0: must be >= 1")]
    [InlineData("oec.method=none", "oec.method is set by --methods, not in the base configuration")]
    [InlineData("divergence.action=stop", "divergence.action is set by the sweep (always warn")]
    [InlineData("train.eval_every=0", "train.eval_every = 0: the sweep needs the final validation loss")]
    [InlineData("train.bogus=1", "unknown setting 'train.bogus'")]
    public void Bad_options_exit_with_2_naming_the_option_and_the_value_before_anything_runs(string args, string expected)
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("sweep");

        var (code, _, error) = Invoke(["sweep", "--out", outDir, .. args.Split(' ')]);

        Assert.Equal(2, code);
        Assert.Contains(expected, error);
        Assert.False(Directory.Exists(outDir));
    }
}
