// The job's metrics for Prometheus: the ranks' step metrics (the names of metrics.jsonl), step time, ranks, restarts,
// divergence events, rollbacks and skipped data.
using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using Job;

namespace Coordinator;

/// <summary>
/// Instruments named as Prometheus shows them: prefix oec_, the words of metrics.jsonl and the proto, labels job and
/// rank only. Gauges read the newest step metrics each rank sent with its heartbeat, except oec_val_loss, which holds
/// the newest validation loss (validation steps are rare: a gauge of the newest step would vanish between them and
/// rarely be scraped at all); oec_step_duration_seconds is a
/// histogram of the reported steps' durations; oec_restarts_total counts generations started after failures.
/// The step a rank's gauges describe is a gauge of its own (oec_metrics_step, oec_val_step), not a label: a step
/// label would start a new series every step. oec_tokens_total counts the tokens trained, for rate().
/// Coordinators sharing a process (tests) export each other's series too, told apart by the job label.
/// </summary>
public sealed class JobMetrics : IDisposable
{
    // Step durations from milliseconds (tiny CPU models) to a minute (large models on few GPUs).
    static readonly double[] StepBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    readonly JobState job;
    readonly Histogram<double> stepDuration;
    readonly ConcurrentDictionary<int, (long Step, double Loss)> valLoss = new(); // rank -> newest validation reported

    public JobMetrics(JobState job)
    {
        this.job = job;
        MeterName = "Oec.Coordinator";
        Meter = new Meter(MeterName);
        foreach (var field in StepMetrics.Fields.Where(f => f.Name is not ("val_loss" or "step_seconds"))) // those two below
            Gauge("oec_" + field.Name, field.Description, field.Read);
        Meter.CreateObservableGauge("oec_val_loss", () => valLoss.Select(kv => new Measurement<double>(kv.Value.Loss, Labels(kv.Key))),
            description: "Cross-entropy on the validation batches at the newest validation, nats per token");
        Meter.CreateObservableGauge("oec_val_step", () => valLoss.Select(kv => new Measurement<long>(kv.Value.Step, Labels(kv.Key))),
            description: "Step of the newest validation: the step oec_val_loss describes");
        Meter.CreateObservableGauge("oec_step", () => job.Ranks().Select(r => new Measurement<long>(r.Step, Labels(r.Rank))),
            description: "Optimizer steps done");
        Meter.CreateObservableGauge("oec_metrics_step", () => job.Ranks().Where(r => r.Metrics is not null).Select(r => new Measurement<long>(r.Metrics!.Step, Labels(r.Rank))),
            description: "Step of the newest step metrics the rank reported: the step its other per-rank gauges describe");
        Meter.CreateObservableGauge("oec_ranks_alive", () => new Measurement<int>(RanksAlive(job, job.Ranks()), new KeyValuePair<string, object?>("job", job.Spec.JobId)),
            description: "Ranks of the current generation that heartbeat in time");
        Counter("oec_restarts", "Generations started after a failure", () => job.Restarts);
        Counter("oec_divergence_events", "Times a divergence rule fired", () => job.DivergenceEvents);
        Counter("oec_rollbacks", "Rollbacks to a checkpoint after a divergence", () => job.Rollbacks);
        Counter("oec_skipped_sequences", "Training sequences skipped by rollbacks", () => job.SkippedSequences);
        long tokensPerStep = (long)job.Spec.Train.BatchSize * job.Spec.Train.Plan.SequenceLength; // the global batch
        Counter("oec_tokens", "Tokens trained by the job, again after a rollback or restart", () => job.StepsTrained * tokensPerStep);
        stepDuration = Meter.CreateHistogram("oec_step_duration", unit: "s", description: "Mean duration of the training steps between a rank's reports (its step_seconds)",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = StepBuckets });
        job.StepReported += (rank, m) =>
        {
            stepDuration.Record(m.StepSeconds, Labels(rank));
            if (m.ValLoss is double v) valLoss[rank] = (m.Step, v);
        };
    }

    /// <summary>Ranks of the current generation (<paramref name="ranks"/> = job.Ranks()) that heartbeat in time.</summary>
    public static int RanksAlive(JobState job, IReadOnlyList<RankStatus> ranks) =>
        ranks.Count(r => !r.Finished && r.SecondsSinceHeartbeat < job.Spec.Options.HeartbeatTimeoutS);

    public string MeterName { get; }
    public Meter Meter { get; }

    void Gauge(string name, string description, Func<StepMetrics, double?> read) =>
        Meter.CreateObservableGauge(name, () => job.Ranks()
            .Where(r => r.Metrics is not null)
            .Select(r => new Measurement<double>(read(r.Metrics!) ?? double.NaN, Labels(r.Rank))), description: description);

    void Counter(string name, string description, Func<long> read) =>
        Meter.CreateObservableCounter(name, () => new Measurement<long>(read(), new KeyValuePair<string, object?>("job", job.Spec.JobId)), description: description);

    KeyValuePair<string, object?>[] Labels(int rank) => [new("job", job.Spec.JobId), new("rank", rank)];

    public void Dispose() => Meter.Dispose();
}
