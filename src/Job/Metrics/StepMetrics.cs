// The step metrics: what a rank measures at each logged step, in one record that every medium maps from.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Job;

/// <summary>One metric of a step besides its number: the name of metrics.jsonl, the proto and the live page (Prometheus
/// adds the oec_ prefix), what it measures, and how to read it from a record (null: not measured at this step).</summary>
public sealed record StepMetric(string Name, string Description, Func<StepMetrics, double?> Read);

/// <summary>One logged step. Losses in nats per token; the OEC statistics from this step's forward pass.</summary>
public sealed record StepMetrics(
    int Step,
    double TrainLoss,          // plain cross-entropy, without regularisers, averaged over the micro-batches
    double? ValLoss,           // cross-entropy on the validation batches, when this step validated
    double LearningRate,
    double GradNorm,           // global L2 norm of the gradient before clipping
    double TokensPerSecond,    // over the training steps since the previous logged step
    double StepSeconds,        // their mean duration (validation and checkpoints not counted)
    double MuNorm,
    double MeanLogit,
    double LogitStd,
    double MaxAbsLogit,
    double MeanLogZ,
    double RLog)
{
    /// <summary>Set on a step that was undone after it was logged: the run went back to the checkpoint at this step (0: the
    /// start), after a divergence rollback or a restart, and ran the later steps again. Absent on the run's curve.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public long? RolledBackTo { get; init; }

    /// <summary>The paper's mechanism measures beyond the twelve (Oec.LogitStatistics): mean over tokens of mu . h, to be
    /// checked against <see cref="MeanLogit"/> (the paper's identity mean_j l_j = mu . h); null when not measured.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? MeanMuDotH { get; init; }

    /// <summary>Max over tokens of |mean_j l_j - mu . h|: what the logits as computed lose of the identity.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? MaxMeanLogitGap { get; init; }

    /// <summary>Mean over the tokens' rows of E (padding rows left out) of r_emb = ||e_i - mu|| / ||e_i|| (near 0: mu dominates the rows).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? REmbMean { get; init; }

    /// <summary>Min over the tokens' rows of E of ||e_i - mu|| / ||e_i||.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? REmbMin { get; init; }

    /// <summary>Mean over tokens of each token's max |logit|: the paper's code's max |logit| (logits_mean_absmax);
    /// <see cref="MaxAbsLogit"/> is the largest over all tokens.</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public double? MeanMaxAbsLogit { get; init; }

    /// <summary>The twelve metrics after Step, in the record's order: the one list that every medium maps from.</summary>
    public static readonly IReadOnlyList<StepMetric> Fields =
    [
        Field(nameof(TrainLoss), "Cross-entropy of the training batch, nats per token", m => m.TrainLoss),
        Field(nameof(ValLoss), "Cross-entropy on the validation batches, nats per token", m => m.ValLoss),
        Field(nameof(LearningRate), "Learning rate of the step", m => m.LearningRate),
        Field(nameof(GradNorm), "Global L2 norm of the gradient before clipping", m => m.GradNorm),
        Field(nameof(TokensPerSecond), "Training throughput over the steps since the previous logged step, tokens per second", m => m.TokensPerSecond),
        Field(nameof(StepSeconds), "Mean duration of the training steps since the previous logged step, seconds", m => m.StepSeconds),
        Field(nameof(MuNorm), "Norm of the mean output embedding", m => m.MuNorm),
        Field(nameof(MeanLogit), "Mean logit over the vocabulary, averaged over tokens", m => m.MeanLogit),
        Field(nameof(LogitStd), "Standard deviation of the logits over the vocabulary, averaged over tokens", m => m.LogitStd),
        Field(nameof(MaxAbsLogit), "Largest absolute logit of the step", m => m.MaxAbsLogit),
        Field(nameof(MeanLogZ), "Mean over tokens of log sum exp of the logits", m => m.MeanLogZ),
        Field(nameof(RLog), "Mean over tokens of max deviation from the mean logit over max absolute logit", m => m.RLog),
    ];

    static StepMetric Field(string property, string description, Func<StepMetrics, double?> read) =>
        new(JsonNamingPolicy.SnakeCaseLower.ConvertName(property), description, read);

    /// <summary>A step known by its training loss alone (a rank's last word): every other metric NaN, not measured.</summary>
    public static StepMetrics LossOnly(long step, double trainLoss) =>
        new(checked((int)step), trainLoss, null, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN, double.NaN);
}
