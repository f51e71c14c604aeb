// The step metrics every rank reported during this coordinator's life, per rank and in step order, for the live page.
using System.Text.Json;
using Job;

namespace Coordinator;

/// <summary>
/// Keeps the StepMetrics of each rank in step order. Memory is bounded: a rank that has MaxPointsPerRank points when
/// one more arrives loses every other point (the first stays, and the new one is appended), so a long run keeps its
/// whole curve at half the resolution each time it fills up. A step at or before a rank's newest one means the rank went
/// back (a restart from a checkpoint): the points from that step on are replaced by the new one. Thread-safe.
/// </summary>
public sealed class MetricsHistory : IDisposable
{
    /// <summary>At most this many points per rank; a point (13 numbers and the object) takes about 150 bytes, so a
    /// full rank about 0.6 MB.</summary>
    public const int MaxPointsPerRank = 4096;

    readonly JobState job;
    readonly Lock gate = new();
    readonly SortedDictionary<int, List<StepMetrics>> ranks = new();
    long epoch;

    public MetricsHistory(JobState job)
    {
        this.job = job;
        job.StepReported += Add;
        job.Rewound += Truncate; // a restart or a divergence rollback: the steps after its checkpoint are void
    }

    /// <summary>Counts the times points were dropped or replaced (thinning, Truncate, a rank going back): a client that
    /// polls with since=step must fetch the whole history again when it changes.</summary>
    public long Epoch { get { lock (gate) return epoch; } }

    public void Add(int rank, StepMetrics m)
    {
        lock (gate)
        {
            if (!ranks.TryGetValue(rank, out var points)) ranks[rank] = points = [];
            if (points.Count > 0 && m.Step <= points[^1].Step)
            {
                points.RemoveAll(p => p.Step >= m.Step);
                epoch++;
            }
            if (points.Count >= MaxPointsPerRank)
            {
                int kept = 0;
                for (int i = 0; i < points.Count; i += 2) points[kept++] = points[i];
                points.RemoveRange(kept, points.Count - kept);
                epoch++;
            }
            points.Add(m);
        }
    }

    /// <summary>Drops every point with Step > step, of every rank: after a rollback to the checkpoint at `step`.</summary>
    public void Truncate(long step)
    {
        lock (gate)
        {
            int removed = ranks.Values.Sum(points => points.RemoveAll(p => p.Step > step));
            if (removed > 0) epoch++;
        }
    }

    /// <summary>A copy of one rank's points, oldest first; empty for a rank that reported nothing.</summary>
    public IReadOnlyList<StepMetrics> Points(int rank)
    {
        lock (gate) return ranks.TryGetValue(rank, out var points) ? points.ToArray() : [];
    }

    /// <summary>
    /// The job's summary and, per rank, the points with Step > since as one array per quantity (the field names of
    /// metrics.jsonl): {"job_id", "phase", ..., "epoch", "ranks": [{"rank": 0, "step": [...], "train_loss": [...], ...}]}.
    /// Non-finite values and a missing val_loss are null: JSON has no NaN.
    /// </summary>
    public void WriteJson(Utf8JsonWriter w, long since = -1)
    {
        long currentEpoch;
        List<(int Rank, StepMetrics[] Points)> copy;
        lock (gate)
        {
            currentEpoch = epoch;
            copy = ranks.Select(r => (r.Key, r.Value.Where(p => p.Step > since).ToArray())).ToList();
        }
        var status = job.Ranks();
        w.WriteStartObject();
        w.WriteString("job_id", job.Spec.JobId);
        w.WriteString("phase", job.Phase.ToString().ToLowerInvariant());
        w.WriteNumber("generation", job.Generation);
        w.WriteNumber("step", status.Count == 0 ? 0 : status.Max(r => r.Step));
        w.WriteNumber("steps", job.Spec.Steps);
        w.WriteNumber("world_size", job.Spec.Options.WorldSize);
        w.WriteNumber("ranks_alive", JobMetrics.RanksAlive(job, status));
        w.WriteNumber("restarts", job.Restarts);
        w.WriteNumber("divergence_events", job.DivergenceEvents);
        w.WriteNumber("rollbacks", job.Rollbacks);
        w.WriteNumber("skipped_sequences", job.SkippedSequences);
        w.WriteNumber("epoch", currentEpoch);
        w.WriteStartArray("ranks");
        foreach (var (rank, points) in copy)
        {
            w.WriteStartObject();
            w.WriteNumber("rank", rank);
            w.WriteStartArray("step");
            foreach (var p in points) w.WriteNumberValue(p.Step);
            w.WriteEndArray();
            foreach (var field in StepMetrics.Fields) Column(w, field.Name, points, field.Read);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void Column(Utf8JsonWriter w, string name, StepMetrics[] points, Func<StepMetrics, double?> read)
    {
        w.WriteStartArray(name);
        foreach (var p in points)
        {
            if (read(p) is double v && double.IsFinite(v)) w.WriteNumberValue(v);
            else w.WriteNullValue();
        }
        w.WriteEndArray();
    }

    public void Dispose()
    {
        job.StepReported -= Add;
        job.Rewound -= Truncate;
    }
}
