// The job's checkpoints: commits once every rank's part is on disk, and the checkpoint a job starts or resumes from.
using Job;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Coordinator;

public sealed partial class JobState
{
    /// <summary>The caller's part of the checkpoint after `step` steps is on disk; true once every rank's is and the
    /// manifest is written (the checkpoint is committed).</summary>
    public bool Commit(Caller c, long step, IReadOnlyList<CheckpointFile> files)
    {
        IReadOnlyList<string> superseded;
        lock (gate)
        {
            var g = Member(c);
            if (step < 1 || step > spec.Steps) throw Refuse(RefusalKind.InvalidArgument, $"commit: step {step} outside [1, {spec.Steps}]");
            if (files.Count > MaxFiles) throw Refuse(RefusalKind.InvalidArgument, $"commit: {files.Count} files (at most {MaxFiles})");
            foreach (var f in files) CheckFile(f);
            if (!g.Commits.TryGetValue(step, out var parts)) g.Commits[step] = parts = new CheckpointFile[World][];
            parts[c.Rank] = [.. files];
            if (parts.Any(p => p is null)) return false;

            var all = parts.SelectMany(p => p!).ToList();
            var duplicate = all.GroupBy(f => f.Name).FirstOrDefault(n => n.Count() > 1);
            if (duplicate is not null) throw Refuse(RefusalKind.InvalidArgument, $"commit: step {step}: two ranks wrote {duplicate.Key}");
            var (epoch, position) = spec.Train.CursorAt(schedule.DataStep(step));
            try
            {
                catalog.WriteManifest(WithRollbacks(new CheckpointManifest(step, spec.JobId, g.Number, World, epoch, position, all, spec.ConfigJson)));
            }
            catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                throw Refuse(RefusalKind.FailedPrecondition, $"checkpoint at step {step} not committed: {e.Message}");
            }
            g.Commits.Remove(step);
            log.Info($"checkpoint at step {step} committed: {all.Count} files, {all.Sum(f => f.Bytes) / 1e6:F1} MB, data cursor epoch {epoch} position {position}");
            catalog.DeleteUnfinished(step);
            superseded = catalog.Superseded(spec.Options.KeepCheckpoints, pin: HealthyStep);
        }
        Rotate(superseded);
        return true;
    }

    /// <summary>Retires superseded checkpoints on a task of their own, one rotation after the other: each is read whole
    /// to check it before it is deleted (about 12 bytes a parameter: minutes for a large model), which under the lock
    /// held back commits past the ranks' deadline and heartbeats past their timeout.</summary>
    void Rotate(IReadOnlyList<string> superseded)
    {
        if (superseded.Count == 0) return;
        lock (rotationGate)
            rotation = rotation.ContinueWith(_ =>
            {
                foreach (string dir in superseded)
                    try { catalog.Retire(dir); }
                    catch (Exception e) { log.Info($"could not retire old checkpoint {dir}: {e.Message}"); } // kept: the next rotation tries again
            }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }

    /// <summary>Completes when the rotations asked for so far are done.</summary>
    public Task Rotation { get { lock (rotationGate) return rotation; } }

    // Caller holds the lock. The manifest with the job's divergence rollbacks so far (absent: none): what a resume
    // from it needs to read the same data at the same rate and count on.
    CheckpointManifest WithRollbacks(CheckpointManifest m) => m with
    {
        DataSkips = schedule.Skips.Count > 0 ? [.. schedule.Skips] : null,
        LearningRateScale = learningRateScale != 1 ? learningRateScale : null,
        Rollbacks = rollbacks > 0 ? rollbacks : null,
    };

    void CheckFile(CheckpointFile f)
    {
        if (!FileName().IsMatch(f.Name) || f.Name == CheckpointCatalog.ManifestName)
            throw Refuse(RefusalKind.InvalidArgument, $"commit: file name '{f.Name}' is not a plain file name other than {CheckpointCatalog.ManifestName}");
        if (!Sha256Hex().IsMatch(f.Sha256)) throw Refuse(RefusalKind.InvalidArgument, $"commit: sha256 '{f.Sha256}' of {f.Name} is not 64 lowercase hex digits");
        if (f.Bytes < 0) throw Refuse(RefusalKind.InvalidArgument, $"commit: {f.Name} has {f.Bytes} bytes");
    }

    (long Step, string? From, CheckpointManifest? Manifest) InitialCheckpoint()
    {
        var latest = catalog.LatestValid();
        var resume = spec.Options.Resume;
        if (latest is null || resume == ResumeMode.No)
        {
            if (latest is not null)
                throw new ArgumentException($"run.out_dir = '{spec.OutDir}' holds a checkpoint at step {latest.Value.Manifest.Step}: " +
                                            "set job.resume=true to continue that run, or choose another run.out_dir");
            // Checkpoints that are all broken are not a reason to start over on top of them (rotation would delete them).
            if (resume != ResumeMode.No && catalog.Committed().ToList() is { Count: > 0 } broken)
                throw new ArgumentException($"job.resume = {Setting(resume)}, but none of the checkpoints in {catalog.Root} is valid " +
                                            $"({string.Join(", ", broken.Select(Path.GetFileName))}; coordinator.log says why each was skipped): " +
                                            "move them aside to start over, or repair them");
            // A finished run without checkpoints, or one whose checkpoints are all broken: a fresh job would overwrite it.
            var run = new[] { "config.json", "metrics.jsonl", "model.safetensors" }.Where(f => File.Exists(Path.Combine(spec.OutDir, f)))
                .Concat(catalog.Committed().Select(d => Path.GetRelativePath(spec.OutDir, d))).ToList();
            if (run.Count > 0 && resume == ResumeMode.Auto && IsOwnFirstAttempt(run))
            {
                log.Info($"job.resume = auto: {spec.OutDir} holds this job's ({spec.JobId}) start, which ended before its first checkpoint: starting again at step 0");
                return (0, null, null);
            }
            if (run.Count > 0)
                throw new ArgumentException($"run.out_dir = '{spec.OutDir}' holds a run ({string.Join(", ", run)}) " +
                                            (resume == ResumeMode.No ? "" : "but no checkpoint to continue it from ") +
                                            "and a fresh job would write over it: choose another run.out_dir");
            if (resume == ResumeMode.Yes)
                throw new ArgumentException($"job.resume = true, but run.out_dir = '{spec.OutDir}' holds no checkpoint (none under {catalog.Root}): " +
                                            "check the path, or set job.resume=auto to start afresh when there is nothing to continue");
            if (resume == ResumeMode.Auto) log.Info($"job.resume = auto and {catalog.Root} holds no checkpoint: starting at step 0");
            return (0, null, null);
        }
        var (manifest, dir) = latest.Value;
        if (spec.ResumeConflict(manifest.Config) is { } conflict)
            throw new ArgumentException($"cannot resume from {dir}: {conflict}");
        return (manifest.Step, dir, manifest);
    }

    // A cluster job's coordinator that died before the first checkpoint leaves config.json (and metrics) of this very
    // job, named by its id; starting it again loses nothing. Anything more (a model, a checkpoint) is another run's.
    bool IsOwnFirstAttempt(List<string> run)
    {
        if (run.Except(["config.json", "metrics.jsonl"]).Any() || !run.Contains("config.json")) return false;
        try { return JsonNode.Parse(File.ReadAllText(Path.Combine(spec.OutDir, "config.json")))?["job"]?["id"]?.GetValue<string>() == spec.JobId; }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException) { return false; }
    }

    static string Setting(ResumeMode mode) => mode == ResumeMode.Auto ? "auto" : "true";

    [GeneratedRegex("^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex FileName();

    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Sha256Hex();
}
