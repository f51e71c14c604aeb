// The step metrics every rank reported during this coordinator's life, per rank and in step order, for the live page;
// the steps a rollback or restart undid kept apart, marked with the step the job went back to.
using System.Text.Json;
using Job;

namespace Coordinator;

/// <summary>
/// Keeps the StepMetrics of each rank in step order. Memory is bounded: a rank that has PointsPerRank points when
/// one more arrives loses every other point (the first stays, and the new one is appended), so a long run keeps its
/// whole curve at half the resolution each time it fills up. A step at or before a rank's newest one means the rank went
/// back (a restart from a checkpoint): the points from that step on are replaced by the new one. Truncate (a rollback or
/// restart announced by the job) moves the points after its step out of the curve into the rank's rolled-back passes,
/// at most PointsPerRank of them per rank (the oldest passes go first). Thread-safe.
/// </summary>
public sealed class MetricsHistory : IDisposable
{
    /// <summary>At most this many points per rank; a point (13 numbers and the object) takes about 150 bytes, so a
    /// full rank about 0.6 MB.</summary>
    public const int MaxPointsPerRank = 4096;

    /// <summary>Points of the ranks other than rank 0 together, at most (about 150 MB), down to 16 per rank: 4096 per rank
    /// would be 10 GB at 16384 ranks. Rank 0, whose loss is the global batch's, keeps <see cref="MaxPointsPerRank"/>.</summary>
    const int OtherRanksPoints = 1 << 20, MinPointsPerRank = 16;

    /// <summary>The points kept of <paramref name="rank"/> in a world of <paramref name="worldSize"/> ranks (also its rolled-back passes').</summary>
    public static int PointsPerRank(int rank, int worldSize) =>
        rank == 0 ? MaxPointsPerRank : Math.Clamp(OtherRanksPoints / Math.Max(1, worldSize - 1), MinPointsPerRank, MaxPointsPerRank);

    readonly JobState job;
    readonly Lock gate = new();
    readonly SortedDictionary<int, List<StepMetrics>> ranks = new();
    readonly Dictionary<int, List<RolledBackPass>> rolledBack = new();
    long epoch;

    public MetricsHistory(JobState job)
    {
        this.job = job;
        job.StepReported += Add;
        job.Rewound += Truncate; // a restart or a divergence rollback: the steps after its checkpoint are undone
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
            if (points.Count >= PointsPerRank(rank, job.Spec.Options.WorldSize))
            {
                int kept = 0;
                for (int i = 0; i < points.Count; i += 2) points[kept++] = points[i];
                points.RemoveRange(kept, points.Count - kept);
                epoch++;
            }
            points.Add(m);
        }
    }

    /// <summary>Moves every point with Step > step, of every rank, out of the curve into a rolled-back pass marked with
    /// `step`: after a rollback or restart to the checkpoint at `step`.</summary>
    public void Truncate(long step)
    {
        lock (gate)
        {
            bool moved = false;
            foreach (var (rank, points) in ranks)
            {
                var undone = points.Where(p => p.Step > step).ToArray();
                if (undone.Length == 0) continue;
                points.RemoveAll(p => p.Step > step);
                if (!rolledBack.TryGetValue(rank, out var passes)) rolledBack[rank] = passes = [];
                passes.Add(new RolledBackPass(step, undone));
                while (passes.Sum(p => p.Points.Length) > PointsPerRank(rank, job.Spec.Options.WorldSize)) passes.RemoveAt(0);
                moved = true;
            }
            if (moved) epoch++;
        }
    }

    /// <summary>A copy of one rank's rolled-back passes, oldest first.</summary>
    public IReadOnlyList<RolledBackPass> RolledBack(int rank)
    {
        lock (gate) return rolledBack.TryGetValue(rank, out var passes) ? passes.ToArray() : [];
    }

    /// <summary>A copy of one rank's points, oldest first; empty for a rank that reported nothing.</summary>
    public IReadOnlyList<StepMetrics> Points(int rank)
    {
        lock (gate) return ranks.TryGetValue(rank, out var points) ? points.ToArray() : [];
    }

    /// <summary>
    /// The job's summary and, per rank, the points with Step > since as one array per quantity (the field names of
    /// metrics.jsonl): {"job_id", "phase", ..., "epoch", "ranks": [{"rank": 0, "step": [...], "train_loss": [...], ...,
    /// "rolled_back": [{"to": step, "step": [...], "train_loss": [...], ...}]}]}; rank 0's rolled-back passes (oldest
    /// first) come whole whatever `since`, the other ranks' as the step each went back to only: the page draws rank 0's
    /// undone points and a marker at each such step (every rank's points would make each poll of a large job's page
    /// hundreds of MB). Non-finite values and a missing val_loss are null: JSON has no NaN.
    /// </summary>
    public void WriteJson(Utf8JsonWriter w, long since = -1)
    {
        long currentEpoch;
        List<(int Rank, StepMetrics[] Points, RolledBackPass[] Passes)> copy;
        lock (gate)
        {
            currentEpoch = epoch;
            copy = ranks.Select(r => (r.Key, r.Value.Where(p => p.Step > since).ToArray(),
                rolledBack.TryGetValue(r.Key, out var passes) ? passes.ToArray() : [])).ToList();
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
        foreach (var (rank, points, passes) in copy)
        {
            w.WriteStartObject();
            w.WriteNumber("rank", rank);
            Columns(w, points);
            w.WriteStartArray("rolled_back");
            foreach (var pass in passes)
            {
                w.WriteStartObject();
                w.WriteNumber("to", pass.To);
                if (rank == 0) Columns(w, pass.Points);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void Columns(Utf8JsonWriter w, StepMetrics[] points)
    {
        w.WriteStartArray("step");
        foreach (var p in points) w.WriteNumberValue(p.Step);
        w.WriteEndArray();
        foreach (var field in StepMetrics.Fields) Column(w, field.Name, points, field.Read);
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

/// <summary>One rank's points that a rollback or restart undid: the step the job went back to, and the points after it
/// in step order.</summary>
public sealed record RolledBackPass(long To, StepMetrics[] Points);
