// What `oecrun sweep` runs: the grid (methods x weight tying x learning rates x presets), the base configuration every
// cell shares, and how many cells run side by side.
using System.Globalization;
using System.Text.Json;
using Oec;
using Rank.Configuration;
using Rank.Model;

namespace OecRun.Sweep;

/// <summary>One cell of the grid: an ordinary training job of its own. Seed: its train.seed when the sweep runs
/// several (--seeds); null: the base configuration's.</summary>
public sealed record SweepCell(string Preset, bool WeightTying, OecMethod Method, double LearningRate, ulong? Seed = null)
{
    /// <summary>The cell's directory name under cells/, e.g. tiny-untied-mu_centering-lr3e-4, or with --seeds
    /// tiny-untied-mu_centering-lr3e-4-s1338.</summary>
    public string Name => $"{Preset}-{Tying(WeightTying)}-{SweepOptions.MethodName(Method)}-lr{SweepOptions.FormatRate(LearningRate)}" +
                          (Seed is { } seed ? $"-s{seed}" : "");

    public static string Tying(bool tied) => tied ? "tied" : "untied";
}

public sealed record SweepOptions
{
    /// <summary>The paper's grid of peak learning rates.</summary>
    public static readonly double[] PaperLearningRates = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1];

    /// <summary>
    /// The CPU-sized run under the file and the overrides (which win): the tiny preset on the synthetic corpus, the
    /// paper's optimizer (AdamW 0.9/0.95, clipping 1.0, weight decay 0) and 5% warmup, validated at the last step;
    /// no periodic checkpoints (a stopped cell checkpoints where it stops and resumes from there). 1200 steps: the whole default grid (70 cells) took 36 minutes
    /// on 2 shared cores (docs/results.md).
    /// </summary>
    public static readonly string[] DefaultSettings =
    [
        "train.steps=1200", "train.warmup_steps=60", "train.weight_decay=0", "train.eval_every=300", "train.eval_batches=16",
        "train.log_every=20", "job.checkpoint_every=0",
    ];

    /// <summary>Keys the sweep sets per cell or for all cells; given in the base configuration they are refused.</summary>
    public static readonly IReadOnlyDictionary<string, string> SweepKeys = new Dictionary<string, string>
    {
        ["model.preset"] = "--presets", ["model.weight_tying"] = "--tying", ["oec.method"] = "--methods",
        ["train.learning_rate"] = "--learning-rates", ["job.world_size"] = "--ranks", ["run.out_dir"] = "--out",
        ["divergence.action"] = "the sweep (always warn: the baseline must be free to diverge)",
        ["job.resume"] = "the sweep (finished cells are kept, stopped ones resume from their checkpoint)",
    };

    public IReadOnlyList<OecMethod> Methods { get; init; } = Enum.GetValues<OecMethod>();
    public IReadOnlyList<bool> Tying { get; init; } = [false, true];
    public IReadOnlyList<double> LearningRates { get; init; } = PaperLearningRates;
    public IReadOnlyList<string> Presets { get; init; } = ["tiny"];
    /// <summary>--seeds: null, one seed per cell (the base configuration's train.seed, names without a seed); else
    /// every cell once per seed.</summary>
    public SeedChoice? Seeds { get; init; }
    /// <summary>--max-minutes: the wall time of this invocation; when it is up the running cells stop at a checkpoint
    /// and no more start. Null: no bound.</summary>
    public double? MaxMinutes { get; init; }
    /// <summary>job.world_size of every cell.</summary>
    public int Ranks { get; init; } = 1;
    /// <summary>Cells run side by side; null: cores / (ranks x threads per rank), at least 1.</summary>
    public int? Parallel { get; init; }
    public required string OutDir { get; init; }
    public string? ConfigFile { get; init; }
    public IReadOnlyList<string> Overrides { get; init; } = [];

    /// <summary>Every cell, presets outermost, then seed, tying, learning rate, method: cells that run side by side are
    /// different methods at one learning rate, so the machine's load falls on the methods alike, and a sweep stopped
    /// early has whole grids of its first seeds. <paramref name="baseSeed"/>: the base configuration's train.seed.</summary>
    public IReadOnlyList<SweepCell> Cells(ulong baseSeed) =>
        (from preset in Presets from seed in CellSeeds(baseSeed) from tied in Tying from lr in LearningRates from method in Methods
         select new SweepCell(preset, tied, method, lr, seed)).ToList();

    /// <summary>The seeds of the cells: [null] without --seeds.</summary>
    public IReadOnlyList<ulong?> CellSeeds(ulong baseSeed) => Seeds?.Resolve(baseSeed).Select(s => (ulong?)s).ToList() ?? [null];

    /// <summary>Checks the grid; throws naming the option and the value.</summary>
    public SweepOptions Validated()
    {
        Distinct("--methods", Methods.Select(MethodName).ToList());
        Distinct("--tying", Tying.Select(t => t ? "true" : "false").ToList());
        Distinct("--learning-rates", LearningRates.Select(FormatRate).ToList());
        Distinct("--presets", Presets);
        if (LearningRates.Count < 2)
            throw new ArgumentException($"--learning-rates: the learning-rate sensitivity needs at least 2 learning rates, got {LearningRates.Count}");
        foreach (double lr in LearningRates)
            if (!(lr > 0) || double.IsInfinity(lr)) throw new ArgumentException($"--learning-rates: {lr}: must be finite and > 0");
        foreach (string preset in Presets)
            if (!ModelOptions.PresetNames.Contains(preset, StringComparer.OrdinalIgnoreCase))
                throw new ArgumentException($"--presets: '{preset}': unknown, expected one of {string.Join(", ", ModelOptions.PresetNames)}");
        if (Ranks < 1) throw new ArgumentException($"--ranks = {Ranks}: must be >= 1");
        if (Parallel < 1) throw new ArgumentException($"--parallel = {Parallel}: must be >= 1");
        if (MaxMinutes is double minutes && !(minutes > 0 && minutes <= TimeSpan.MaxValue.TotalMinutes / 2))
            throw new ArgumentException($"--max-minutes = {minutes.ToString(CultureInfo.InvariantCulture)}: must be a number of minutes > 0");
        if (string.IsNullOrWhiteSpace(OutDir)) throw new ArgumentException("--out = (empty): must be a directory path");
        return this with { LearningRates = LearningRates.Order().ToList() };
    }

    /// <summary>The base configuration: the sweep's defaults under the file and the overrides, with job.world_size =
    /// --ranks, divergence.action = warn and run.out_dir = --out. Refuses keys the sweep sets, job.resume, and a run
    /// that does not validate at its last step.</summary>
    public RunConfig BaseConfig()
    {
        foreach (string key in RunConfig.GivenKeys(ConfigFile, Overrides))
            if (SweepKeys.TryGetValue(key, out string? owner))
                throw new ArgumentException($"{key} is set by {owner}, not in the base configuration; remove it from --config and the overrides");
        var config = RunConfig.Load(ConfigFile, [.. Overrides, .. SweepSettings()], DefaultSettings);
        if (config.Train.EvalEvery == 0)
            throw new ArgumentException("train.eval_every = 0: the sweep needs the final validation loss; set it > 0 (the last step always validates then)");
        return config;
    }

    /// <summary>A cell's configuration: the base with the cell's preset, tying, method, learning rate and seed, its own
    /// run directory, job.resume = auto (a stopped cell continues from its checkpoint), and <paramref name="threads"/>
    /// libtorch threads per rank when the base leaves train.threads at 0.</summary>
    public RunConfig CellConfig(SweepCell cell, string runDir, int threads)
    {
        var settings = new List<string>(Overrides)
        {
            $"model.preset={cell.Preset}", $"model.weight_tying={(cell.WeightTying ? "true" : "false")}",
            $"oec.method={MethodName(cell.Method)}", $"train.learning_rate={cell.LearningRate.ToString("R", CultureInfo.InvariantCulture)}",
        };
        if (cell.Seed is { } seed) settings.Add($"train.seed={seed}");
        settings.AddRange(SweepSettings());
        settings.Add($"run.out_dir={runDir}");
        settings.Add("job.resume=auto");
        var config = RunConfig.Load(ConfigFile, settings, DefaultSettings);
        return config.Train.Threads > 0 ? config : (config with { Train = config.Train with { Threads = threads } }).Validated();
    }

    IEnumerable<string> SweepSettings() => [$"job.world_size={Ranks}", "divergence.action=warn", $"run.out_dir={OutDir}"];

    /// <summary>(cells side by side, libtorch threads per rank): --parallel and train.threads as given; what is not
    /// given shares the cores, so that parallel x ranks x threads does not exceed them (tiny models gain more from
    /// cells side by side than from threads, so threads default to 1 when neither is given). On GPUs one cell at a
    /// time unless --parallel says otherwise: every cell's ranks take cuda:0..ranks-1, and cells sharing GPUs would
    /// make each other's step times meaningless.</summary>
    public (int Parallel, int Threads) Concurrency(int baseThreads, int cores, bool gpu = false)
    {
        int threads = baseThreads > 0 ? baseThreads : Parallel is int p ? Math.Max(1, cores / (p * Ranks)) : 1;
        return (Parallel ?? (gpu ? 1 : Math.Max(1, cores / (Ranks * threads))), threads);
    }

    public static string MethodName(OecMethod method) => JsonNamingPolicy.SnakeCaseLower.ConvertName(method.ToString());

    /// <summary>A learning rate as the table and the cell names show it: 3e-4, 1e-1, 2.5e-3.</summary>
    public static string FormatRate(double lr) => lr.ToString("0.###e-0", CultureInfo.InvariantCulture);

    /// <summary>"none,mu_loss" (commas or spaces) into methods; an unknown name throws naming it and the choices.</summary>
    public static List<OecMethod> ParseMethods(string text)
    {
        var byName = Enum.GetValues<OecMethod>().ToDictionary(MethodName);
        return Split(text).Select(m => byName.TryGetValue(m, out var method) ? method
            : throw new ArgumentException($"--methods: '{m}': unknown, expected one of {string.Join(", ", byName.Keys)}")).ToList();
    }

    public static List<bool> ParseTying(string text) => Split(text).Select(t => t switch
    {
        "false" => false,
        "true" => true,
        _ => throw new ArgumentException($"--tying: '{t}': expected false or true"),
    }).ToList();

    public static List<double> ParseRates(string text) => Split(text).Select(t =>
        double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double lr) ? lr
            : throw new ArgumentException($"--learning-rates: '{t}': not a number")).ToList();

    public static List<string> ParsePresets(string text) => Split(text);

    /// <summary>"3": three seeds from the base's train.seed on; "1,2,5": those seeds.</summary>
    public static SeedChoice ParseSeeds(string text)
    {
        var values = Split(text).Select(t => ulong.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out ulong v) ? v
            : throw new ArgumentException($"--seeds: '{t}': not a whole number >= 0")).ToList();
        if (values.Count == 0) throw new ArgumentException("--seeds: empty, give a count or a list of seeds");
        if (values.Count > 1)
        {
            Distinct("--seeds", values.Select(v => v.ToString(CultureInfo.InvariantCulture)).ToList());
            return new SeedChoice(null, values);
        }
        if (values[0] is < 1 or > 1000) throw new ArgumentException($"--seeds {values[0]}: a count of seeds must be 1 to 1000 (give a list, e.g. 7,8, for particular seeds)");
        return new SeedChoice((int)values[0], null);
    }

    static List<string> Split(string text) => text.Split([',', ' '], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();

    static void Distinct(string option, IReadOnlyList<string> values)
    {
        if (values.Count == 0) throw new ArgumentException($"{option}: empty, give at least one value");
        if (values.GroupBy(v => v, StringComparer.OrdinalIgnoreCase).FirstOrDefault(g => g.Count() > 1) is { } twice)
            throw new ArgumentException($"{option}: '{twice.Key}' is given twice");
    }
}

/// <summary>--seeds: a count (that many seeds from the base configuration's train.seed on) or a list of seeds.</summary>
public sealed record SeedChoice(int? Count, IReadOnlyList<ulong>? List)
{
    public IReadOnlyList<ulong> Resolve(ulong baseSeed) =>
        List ?? Enumerable.Range(0, Count!.Value).Select(k => baseSeed + (ulong)k).ToList();
}
