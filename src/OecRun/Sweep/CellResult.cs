// What a sweep keeps of each finished cell and of each untrained model: small JSON files, written whole or not at all.
using Job;
using System.Text.Json;
using System.Text.Json.Serialization;
using Rank.Training;

namespace OecRun.Sweep;

/// <summary>A finished cell, read from its job's metrics log after the job ended. Its file (result.json in the cell's
/// directory) is what marks the cell finished.</summary>
/// <param name="ExitCode">0: the job did all its steps; 3: it stopped on a non-finite training loss (diverged).</param>
/// <param name="Steps">Optimizer steps done: the last logged step.</param>
/// <param name="FinalValLoss">Cross-entropy on the validation batches after the last step, nats per token; NaN when
/// the job stopped on a non-finite loss.</param>
/// <param name="MuNorm">||mu||, the mean logit and max |logit| at the last logged step (see README, metrics log).</param>
/// <param name="StepSeconds">Mean time of a training step after the first logged row (whose interval includes warm-up):
/// each row's step_seconds (the mean over the steps since the row before) weighted by those steps.</param>
/// <param name="WallSeconds">The whole job: coordinator, rank process starts, training, validation; of a cell stopped
/// and resumed, the invocation that finished it.</param>
public sealed record CellResult(
    string Cell, string Preset, bool WeightTying, string Method, double LearningRate, int ExitCode, int Steps,
    double FinalValLoss, double FinalTrainLoss, double MuNorm, double MeanLogit, double MaxAbsLogit,
    double StepSeconds, double WallSeconds, DateTime StartedUtc, DateTime FinishedUtc)
{
    public const string FileName = "result.json";

    /// <summary>train.seed of the cell when the sweep runs several seeds; absent otherwise.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public ulong? Seed { get; init; }

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, // a diverged cell's loss is "NaN"
        RespectRequiredConstructorParameters = true,
        WriteIndented = true,
    };

    /// <summary>The cell's result from its job's exit code and metrics log (absent or empty: the job stopped before
    /// its first logged step, which only a diverged job may).</summary>
    public static CellResult FromJob(SweepCell cell, string runDir, int exitCode, TimeSpan wall, DateTime startedUtc)
    {
        string log = Path.Combine(runDir, "metrics.jsonl");
        var steps = File.Exists(log) ? MetricsLog.Read(log) : [];
        if (steps.Count == 0 && exitCode != 3) throw new InvalidOperationException($"cell {cell.Name}: the job ended with exit code {exitCode} but {log} holds no steps");
        var last = steps.Count > 0 ? steps[^1] : null;
        var timed = (steps.Count > 1 ? steps.Zip(steps.Skip(1), (before, row) => (row.StepSeconds, Steps: row.Step - before.Step))
            : steps.Select(row => (row.StepSeconds, Steps: row.Step))).ToList();
        double valLoss = exitCode == 3 ? double.NaN
            : last!.ValLoss ?? throw new InvalidOperationException($"cell {cell.Name}: the last logged step {last.Step} in {log} did not validate");
        return new CellResult(cell.Name, cell.Preset, cell.WeightTying, SweepOptions.MethodName(cell.Method), cell.LearningRate, exitCode,
            last?.Step ?? 0, valLoss, last?.TrainLoss ?? double.NaN, last?.MuNorm ?? double.NaN, last?.MeanLogit ?? double.NaN,
            last?.MaxAbsLogit ?? double.NaN, timed.Count > 0 ? timed.Sum(t => t.StepSeconds * t.Steps) / timed.Sum(t => t.Steps) : double.NaN,
            wall.TotalSeconds, startedUtc, DateTime.UtcNow) { Seed = cell.Seed };
    }

    public void Write(string path) => AtomicFile.Write(path, s => JsonSerializer.Serialize(s, this, Json));

    /// <summary>A result file; one that is not a whole record is an error naming it (they are written atomically, so
    /// only a hand edit makes one).</summary>
    public static CellResult Read(string path) => ReadJson<CellResult>(path);

    internal static T ReadJson<T>(string path)
    {
        try { return JsonSerializer.Deserialize<T>(File.ReadAllText(path), Json) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new Data.DataFormatException($"{path}: not a {typeof(T).Name} record: {e.Message}"); }
    }
}

/// <summary>L0: the validation loss of the untrained model of one preset and tying setting (the trainer's own
/// Evaluate, on the cells' validation batches), nats per token; ln V beside it for comparison.</summary>
public sealed record InitialLoss(string Preset, bool WeightTying, double ValLoss, int EvalBatches, double LnVocab)
{
    public void Write(string path) => AtomicFile.Write(path, s => JsonSerializer.Serialize(s, this, CellResult.Json));

    public static InitialLoss Read(string path) => CellResult.ReadJson<InitialLoss>(path);
}
