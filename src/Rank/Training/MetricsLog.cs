// The JSON-lines metrics log of a run: one object per logged step, the names later exported as metrics.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Rank.Training;

/// <summary>One logged step. Losses in nats per token; the OEC statistics from this step's forward pass.</summary>
public sealed record StepMetrics(
    int Step,
    double TrainLoss,          // plain cross-entropy, without regularisers, averaged over the micro-batches
    double? ValLoss,           // cross-entropy on the validation batches, when this step validated
    double LearningRate,
    double GradNorm,           // global L2 norm of the gradient before clipping
    double TokensPerSecond,
    double StepSeconds,
    double MuNorm,
    double MeanLogit,
    double LogitStd,
    double MaxAbsLogit,
    double MeanLogZ,
    double RLog);

public sealed class MetricsLog : IDisposable
{
    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, // a diverged loss is logged as "NaN"
    };

    readonly StreamWriter writer;

    public MetricsLog(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        writer = new StreamWriter(path, append: false);
    }

    /// <summary>Appends one line and flushes, so a crashed run keeps every step logged before it.</summary>
    public void Write(StepMetrics metrics)
    {
        writer.WriteLine(JsonSerializer.Serialize(metrics, Json));
        writer.Flush();
    }

    public static IReadOnlyList<StepMetrics> Read(string path) =>
        File.ReadLines(path).Select(line => JsonSerializer.Deserialize<StepMetrics>(line, Json)!).ToList();

    public void Dispose() => writer.Dispose();
}
