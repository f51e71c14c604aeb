// The job's metrics for Prometheus: rank 0's step metrics (the names of metrics.jsonl) for the job, each rank's step
// and step time, the job's phase and progress, ranks, restarts, divergence events, rollbacks and skipped data.
using System.Diagnostics.Metrics;
using Job;
using OpenTelemetry.Metrics;

namespace Coordinator;

/// <summary>
/// Instruments named as Prometheus shows them: prefix oec_, the words of metrics.jsonl and the proto.
///
/// Series of the job (label job): the step metrics of rank 0's newest logged step (its loss is the global batch's,
/// its learning rate and gradient norm every rank's, its logit statistics replica 0's: what the divergence rules
/// read), oec_metrics_step (that step), oec_val_loss and oec_val_step (rank 0's newest validation: validation steps
/// are rare, and a gauge of the newest step would vanish between them); both are dropped when the job goes back past
/// their step (a restart or a rollback). oec_step_duration_seconds is a histogram of every rank's reported step times;
/// the phase (oec_job_phase, 1 for the current one), generation, world size, ranks alive and the seconds since the job last moved (oec_progress_age_seconds)
/// say whether the job moves; counters for restarts, divergence events, rollbacks, skipped sequences and tokens.
///
/// Series of each rank (labels job and rank): only oec_step and oec_step_seconds, what tells a straggler or a stuck
/// rank. At the largest world size that is 2 x 65536 series; a series per rank for every statistic would be 15 times
/// that, of values every rank shares. Coordinators sharing a process (tests) export each other's series too, told
/// apart by the job label.
/// </summary>
public sealed class JobMetrics : IDisposable
{
    // Step durations from milliseconds (tiny CPU models) to a minute (large models on few GPUs).
    static readonly double[] StepBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

    /// <summary>Series an instrument may have: one per rank at the largest world size, and the one OpenTelemetry keeps
    /// for overflow (its default, 2000, would fold every rank beyond into that one).</summary>
    public const int CardinalityLimit = JobOptions.MaxWorldSize + 1;

    readonly JobState job;
    readonly Histogram<double> stepDuration;
    readonly KeyValuePair<string, object?> jobLabel;
    readonly Lock gate = new();
    StepMetrics? lead;                       // rank 0's newest logged step
    (long Step, double Loss)? leadValidation; // rank 0's newest validation

    public JobMetrics(JobState job)
    {
        this.job = job;
        jobLabel = new("job", job.Spec.JobId);
        MeterName = "Oec.Coordinator";
        Meter = new Meter(MeterName);
        foreach (var field in StepMetrics.Fields.Where(f => f.Name is not ("val_loss" or "step_seconds"))) // those below
            Meter.CreateObservableGauge("oec_" + field.Name, () => Lead(m => read(field, m)), description: field.Description);
        Meter.CreateObservableGauge("oec_metrics_step", () => Lead(m => (double)m.Step),
            description: "Step of rank 0's newest logged step metrics: the step the job's step-metric gauges describe");
        Meter.CreateObservableGauge("oec_val_loss", () => Validation(v => v.Loss),
            description: "Cross-entropy on the validation batches at rank 0's newest validation, nats per token");
        Meter.CreateObservableGauge("oec_val_step", () => Validation(v => v.Step),
            description: "Step of the newest validation: the step oec_val_loss describes");

        Meter.CreateObservableGauge("oec_step", () => job.Ranks().Select(r => new Measurement<long>(r.Step, RankLabels(r.Rank))),
            description: "Optimizer steps done, per rank");
        Meter.CreateObservableGauge("oec_step_seconds", () => job.Ranks().Where(r => r.Metrics is not null)
                .Select(r => new Measurement<double>(r.Metrics!.StepSeconds, RankLabels(r.Rank))),
            unit: "s", description: "Mean duration of the training steps before the rank's newest logged step, per rank");

        Meter.CreateObservableGauge("oec_ranks_alive", () => new Measurement<int>(RanksAlive(job, job.Ranks()), jobLabel),
            description: "Ranks of the current generation that heartbeat in time");
        Meter.CreateObservableGauge("oec_world_size", () => new Measurement<int>(job.Spec.Options.WorldSize, jobLabel),
            description: "Ranks the job trains with (job.world_size)");
        Meter.CreateObservableGauge("oec_generation", () => new Measurement<int>(job.Generation, jobLabel),
            description: "The current generation: 1, and 1 more after each restart or rollback");
        Meter.CreateObservableGauge("oec_job_phase", () => Phases(job.Phase),
            description: "1 for the job's current phase (label phase: registering, running, succeeded, stopped, diverged, failed), 0 for the others");
        Meter.CreateObservableGauge<double>("oec_progress_age", () => job.SecondsSinceProgress is double s ? [new(s, jobLabel)] : [],
            unit: "s", description: "Seconds since a rank last reported a new step (or the generation started or opened); absent once the job is over");
        Counter("oec_restarts", "Generations started after a failure", () => job.Restarts);
        Counter("oec_divergence_events", "Times a divergence rule fired", () => job.DivergenceEvents);
        Counter("oec_rollbacks", "Rollbacks to a checkpoint after a divergence", () => job.Rollbacks);
        Counter("oec_skipped_sequences", "Training sequences skipped by rollbacks", () => job.SkippedSequences);
        long tokensPerStep = (long)job.Spec.Train.BatchSize * job.Spec.Train.Plan.SequenceLength; // the global batch
        Counter("oec_tokens", "Tokens trained by the job, again after a rollback or restart", () => job.StepsTrained * tokensPerStep);
        stepDuration = Meter.CreateHistogram("oec_step_duration", unit: "s", description: "Mean duration of the training steps between a rank's reports (its step_seconds), every rank's",
            advice: new InstrumentAdvice<double> { HistogramBucketBoundaries = StepBuckets });
        job.StepReported += Reported;
        job.Rewound += Rewound;

        static double read(StepMetric field, StepMetrics m) => field.Read(m) ?? double.NaN;
    }

    /// <summary>Ranks of the current generation (<paramref name="ranks"/> = job.Ranks()) that heartbeat in time.</summary>
    public static int RanksAlive(JobState job, IReadOnlyList<RankStatus> ranks) =>
        ranks.Count(r => !r.Finished && r.SecondsSinceHeartbeat < job.Spec.Options.HeartbeatTimeoutS);

    /// <summary>Registers the meter with the provider, each instrument allowed <see cref="CardinalityLimit"/> series.</summary>
    public void AddTo(MeterProviderBuilder metrics) =>
        metrics.AddMeter(MeterName).AddView(_ => new MetricStreamConfiguration { CardinalityLimit = CardinalityLimit });

    public string MeterName { get; }
    public Meter Meter { get; }

    void Reported(int rank, StepMetrics m)
    {
        stepDuration.Record(m.StepSeconds, jobLabel);
        if (rank != 0) return;
        lock (gate)
        {
            lead = m;
            if (m.ValLoss is double v) leadValidation = (m.Step, v);
        }
    }

    // The job went back to `step`: what rank 0 reported after it is void.
    void Rewound(long step)
    {
        lock (gate)
        {
            if (lead?.Step > step) lead = null;
            if (leadValidation?.Step > step) leadValidation = null;
        }
    }

    Measurement<double>[] Lead(Func<StepMetrics, double> read)
    {
        lock (gate) return lead is { } m ? [new(read(m), jobLabel)] : [];
    }

    Measurement<double>[] Validation(Func<(long Step, double Loss), double> read)
    {
        lock (gate) return leadValidation is { } v ? [new(read(v), jobLabel)] : [];
    }

    IEnumerable<Measurement<int>> Phases(JobPhase current) => Enum.GetValues<JobPhase>()
        .Select(p => new Measurement<int>(p == current ? 1 : 0, jobLabel, new("phase", p.ToString().ToLowerInvariant())));

    void Counter(string name, string description, Func<long> read) =>
        Meter.CreateObservableCounter(name, () => new Measurement<long>(read(), jobLabel), description: description);

    KeyValuePair<string, object?>[] RankLabels(int rank) => [jobLabel, new("rank", rank)];

    public void Dispose()
    {
        job.StepReported -= Reported;
        job.Rewound -= Rewound;
        Meter.Dispose();
    }
}
