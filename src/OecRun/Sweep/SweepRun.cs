// `oecrun sweep`: every cell of the grid as an ordinary local job in its own run directory, cells side by side,
// resumable; then the report.
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using Coordinator;
using Job;
using Oec;
using Rank.Configuration;
using OecRun.Launching;
using Rank.Training;

namespace OecRun.Sweep;

public static class SweepRun
{
    public const string ManifestFile = "sweep.json", LogFile = "sweep.log";

    /// <summary>
    /// Runs the cells that have no result.json yet (a cell directory without one is half-done: it resumes from its
    /// checkpoint, or without one is deleted and started afresh), measures L0 once per preset and tying, and writes
    /// the report of the cells finished so far. The first interrupt, or the end of --max-minutes, stops the running
    /// jobs at a checkpoint and starts no more. Exit code: 0 (done, or stopped), 1 (a cell's job failed: the others
    /// ran; run again to retry it).
    /// </summary>
    public static async Task<int> Run(SweepOptions options, ProcessCommand rankCommand, TextWriter console, CancellationToken interrupt)
    {
        options = options.Validated();
        var baseConfig = options.BaseConfig();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(interrupt);
        if (options.MaxMinutes is double minutes) stop.CancelAfter(TimeSpan.FromMinutes(minutes));
        var (parallel, threads) = options.Concurrency(baseConfig.Train.Threads, Environment.ProcessorCount, gpu: baseConfig.Train.Device == "cuda");
        string outDir = options.OutDir;
        var cells = options.Cells(baseConfig.Train.Seed);
        var configs = cells.ToDictionary(c => c, c => options.CellConfig(c, Path.Combine(outDir, "cells", c.Name), threads));
        // One sweep at a time in a directory: a second one would take the first's running cells (no result, no
        // checkpoint yet) for half-done and delete them.
        using var sweepLock = Launching.RunDirectoryLock.Acquire(outDir);
        CheckManifest(outDir, baseConfig);
        using var log = new SweepLog(console, Path.Combine(outDir, LogFile));

        var results = new ConcurrentDictionary<SweepCell, CellResult>();
        var todo = new ConcurrentQueue<SweepCell>();
        foreach (var cell in cells)
        {
            string dir = configs[cell].Run.OutDir!;
            if (File.Exists(Path.Combine(dir, CellResult.FileName))) results[cell] = CellResult.Read(Path.Combine(dir, CellResult.FileName));
            else todo.Enqueue(cell);
        }
        log.Info($"{cells.Count} cells in {outDir}: {results.Count} finished earlier, {todo.Count} to run, {parallel} side by side, " +
                 $"{options.Ranks} rank(s) x {configs[cells[0]].Train.Threads} libtorch thread(s) each" +
                 (options.MaxMinutes is double bound ? $"; stopping after {bound:0.##} min" : ""));

        var initial = new Dictionary<(string, bool), InitialLoss>();
        foreach (var group in cells.Select(c => (c.Preset, c.WeightTying)).Distinct())
            initial[group] = MeasureInitialLoss(options, cells.First(c => (c.Preset, c.WeightTying) == group), threads, log);

        int total = todo.Count, done = 0;
        var failed = new ConcurrentBag<string>();
        var clock = Stopwatch.StartNew();
        async Task Worker()
        {
            while (!stop.IsCancellationRequested && todo.TryDequeue(out var cell))
            {
                var (result, failedWith) = await RunCell(cell, configs[cell], rankCommand, log, stop.Token);
                if (failedWith is int code) failed.Add($"{cell.Name} (exit code {code})");
                if (result is null) continue;
                results[cell] = result;
                int k = Interlocked.Increment(ref done);
                var left = TimeSpan.FromSeconds(clock.Elapsed.TotalSeconds / k * (total - k));
                log.Info($"[{k}/{total}] {cell.Name}: {Describe(result)}; about {left:h\\:mm\\:ss} left");
            }
        }
        await Task.WhenAll(Enumerable.Range(0, parallel).Select(_ => Task.Run(Worker)));

        if (!failed.IsEmpty)
            log.Info($"{failed.Count} cell(s) failed: {string.Join(", ", failed.Order())} (each one's coordinator.log says why); " +
                     "run the same command again to retry them");
        else if (results.Count < cells.Count)
            log.Info($"stopped{(interrupt.IsCancellationRequested ? "" : " at --max-minutes")}: {results.Count} of {cells.Count} cells finished; " +
                     "run the same command again to resume (finished cells are kept, stopped ones resume from their checkpoint)");
        if (!results.IsEmpty) // the cells finished so far, also when another failed
            foreach (string path in SweepReport.Write(outDir, options, baseConfig, results, initial))
                log.Info($"wrote {path}{(results.Count < cells.Count ? $" ({results.Count} of {cells.Count} cells)" : "")}");
        return failed.IsEmpty ? 0 : 1;
    }

    /// <summary>One cell's job, from an empty directory or from its checkpoint: its result, or no result when it was
    /// stopped before it ended (half-done: its checkpoint resumes it) or failed (with the exit code). A job that exits 3
    /// stopped on a non-finite loss: a diverged cell, not a failure. A finished cell's checkpoints are removed when
    /// the base asks for none (job.checkpoint_every = 0: they were only the stops').</summary>
    static async Task<(CellResult? Result, int? FailedWith)> RunCell(SweepCell cell, RunConfig config, ProcessCommand rankCommand, SweepLog log, CancellationToken interrupt)
    {
        string dir = config.Run.OutDir!, checkpoints = Path.Combine(dir, "checkpoints");
        var resumable = Directory.Exists(checkpoints) ? new CheckpointCatalog(checkpoints, log.Info).LatestValid() : null;
        if (resumable is { } from) log.Info($"{cell.Name}: resumed from its checkpoint at step {from.Manifest.Step}");
        else
        {
            if (Directory.Exists(dir))
            {
                log.Info($"{cell.Name}: half-done (no {CellResult.FileName}, no checkpoint); deleting {dir} and starting afresh");
                Directory.Delete(dir, recursive: true);
            }
            Directory.CreateDirectory(dir);
            log.Info($"{cell.Name}: started");
        }
        var started = DateTime.UtcNow;
        var clock = Stopwatch.StartNew();
        int exit;
        using (var file = new StreamWriter(Path.Combine(dir, "console.log"), append: true) { AutoFlush = true })
            exit = await Launch.Local(config, rankCommand, TextWriter.Synchronized(file), interrupt);
        var steps = File.Exists(Path.Combine(dir, "metrics.jsonl")) ? MetricsLog.Read(Path.Combine(dir, "metrics.jsonl")) : [];
        bool complete = exit == 0 && steps.Count > 0 && steps[^1].Step == config.Train.Steps;
        if (exit == 3 || complete)
        {
            var result = CellResult.FromJob(cell, dir, exit, clock.Elapsed, started);
            result.Write(Path.Combine(dir, CellResult.FileName)); // the mark of a finished cell, after its job ended
            if (config.Job.CheckpointEvery == 0 && Directory.Exists(checkpoints)) Directory.Delete(checkpoints, recursive: true);
            return (result, null);
        }
        if (interrupt.IsCancellationRequested)
        {
            log.Info($"{cell.Name}: stopped after step {(steps.Count > 0 ? steps[^1].Step : 0)} logged (half-done; its checkpoint resumes it next time)");
            return (null, null);
        }
        log.Info($"{cell.Name}: the job failed with exit code {exit}; see {Path.Combine(dir, "coordinator.log")} and console.log");
        return (null, exit);
    }

    static string Describe(CellResult r) =>
        (r.ExitCode == 3 ? $"stopped on a non-finite loss at step {r.Steps}" : $"val loss {r.FinalValLoss:F4} after {r.Steps} steps") +
        $", {r.StepSeconds * 1000:F1} ms/step, |mu| {r.MuNorm:G4}, max|logit| {r.MaxAbsLogit:G4}, {r.WallSeconds:F0} s";

    /// <summary>L0 of one preset and tying: the untrained model (method none, the seed of <paramref name="first"/>, the
    /// group's first cell) evaluated by the trainer on the cells' validation batches, in this process. Kept in initial/
    /// so a resumed sweep reuses it.</summary>
    static InitialLoss MeasureInitialLoss(SweepOptions options, SweepCell first, int threads, SweepLog log)
    {
        var (preset, tied) = (first.Preset, first.WeightTying);
        string path = Path.Combine(options.OutDir, "initial", $"{preset}-{SweepCell.Tying(tied)}.json");
        if (File.Exists(path)) return InitialLoss.Read(path);
        var config = options.CellConfig(first with { Method = OecMethod.None }, Path.GetDirectoryName(path)!, threads);
        using var trainer = new Trainer(config);
        var measured = new InitialLoss(preset, tied, trainer.Evaluate(), config.Train.EvalBatches, Math.Log(trainer.Model.VocabSize));
        measured.Write(path);
        log.Info($"L0 of {preset}, {SweepCell.Tying(tied)}: {measured.ValLoss:F4} nats/token at initialisation (ln V = {measured.LnVocab:F4})");
        return measured;
    }

    /// <summary>The first run writes the base configuration to sweep.json; a later run in the same directory must
    /// have the same one (run.out_dir and job.id aside), else it is refused naming every difference. The saved one is
    /// read as a configuration, so an option added to oecrun since (absent there) counts as its default.</summary>
    public static void CheckManifest(string outDir, RunConfig baseConfig)
    {
        string path = Path.Combine(outDir, ManifestFile);
        var now = JsonNode.Parse(baseConfig.ToJson())!.AsObject();
        if (!File.Exists(path))
        {
            var manifest = new JsonObject { ["base"] = now };
            AtomicFile.Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); w.Write(manifest.ToJsonString(RunConfig.Json)); });
            return;
        }
        var saved = JsonNode.Parse(File.ReadAllText(path))?["base"] as JsonObject
                    ?? throw new Data.DataFormatException($"{path}: no \"base\" configuration object");
        RunConfig savedConfig;
        try { savedConfig = RunConfig.FromJson(saved.ToJsonString()); }
        catch (ArgumentException e) { throw new Data.DataFormatException($"{path}: its base configuration cannot be read: {e.Message}"); }
        var before = Flatten(JsonNode.Parse(savedConfig.ToJson())!.AsObject());
        var after = Flatten(now);
        var differences = before.Keys.Union(after.Keys).Order(StringComparer.Ordinal)
            .Where(k => k is not ("run.out_dir" or "job.id") && before.GetValueOrDefault(k) != after.GetValueOrDefault(k))
            .Select(k => $"{k} = {before.GetValueOrDefault(k) ?? "(absent)"} there, {after.GetValueOrDefault(k) ?? "(absent)"} now").ToList();
        if (differences.Count > 0)
            throw new ArgumentException($"{outDir} holds a sweep with another base configuration ({path}): {string.Join("; ", differences)}. " +
                                        "Resume it with the same settings, or give another --out");
    }

    static Dictionary<string, string> Flatten(JsonObject root)
    {
        var flat = new Dictionary<string, string>();
        void Walk(JsonObject node, string prefix)
        {
            foreach (var (name, child) in node)
                if (child is JsonObject o) Walk(o, prefix + name + ".");
                else flat[prefix + name] = child?.ToJsonString() ?? "null";
        }
        Walk(root, "");
        return flat;
    }

    /// <summary>The sweep's own lines, timestamped, on the console and appended to sweep.log.</summary>
    sealed class SweepLog(TextWriter console, string path) : IDisposable
    {
        readonly Lock gate = new();
        readonly StreamWriter file = new(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };

        public void Info(string message)
        {
            string line = $"{DateTime.UtcNow:HH:mm:ss} sweep: {message}";
            lock (gate)
            {
                console.WriteLine(line);
                file.WriteLine(line);
            }
        }

        public void Dispose() => file.Dispose();
    }
}
