// A whole job on one machine: rank processes started, their output streamed with a prefix, respawned after failures.
using System.Diagnostics;
using System.Threading.Channels;
using Coordinator;
using Job;

namespace OecRun.Launching;

/// <summary>How to start a process of this program (a rank, the coordinator): the program and its arguments (the launcher adds the environment).</summary>
public sealed record ProcessCommand(string FileName, IReadOnlyList<string> Arguments);

/// <summary>
/// Starts job.world_size rank processes per generation with the torchrun-style environment (RANK, WORLD_SIZE,
/// LOCAL_RANK, LOCAL_WORLD_SIZE) plus OEC_COORDINATOR, OEC_JOB_ID and OEC_JOB_TOKEN. A rank that exits with a non-zero
/// code fails its generation; when the coordinator opens the next one, the old processes get job.heartbeat_timeout_s
/// (at most <see cref="Grace"/>) to exit and are then killed, and a fresh set starts. Returns the job's outcome once every process is gone.
/// </summary>
public sealed class LocalLauncher(JobState job, JobLog log, ProcessCommand command, Uri coordinator)
{
    /// <summary>How long processes of an ended generation or job may take to exit before they are killed.</summary>
    public TimeSpan Grace { get; init; } = TimeSpan.FromSeconds(20);

    /// <summary>Called after a rank process started: (generation, rank, process). Tests use it to kill one.</summary>
    public Action<int, int, Process>? Started { get; init; }

    public async Task<JobOutcome> RunAsync(CancellationToken interrupt)
    {
        var opened = Channel.CreateUnbounded<int>();
        job.GenerationOpened += g => opened.Writer.TryWrite(g);
        int stops = 0;
        using var onInterrupt = interrupt.Register(() =>
        {
            if (Interlocked.Increment(ref stops) == 1) job.RequestStop("interrupted");
        });

        if (job.Outcome.IsCompleted) return await job.Outcome; // e.g. resumed from the last step's checkpoint: nothing to run
        var running = Spawn(job.Generation);
        while (true)
        {
            var next = opened.Reader.WaitToReadAsync().AsTask();
            var finished = await Task.WhenAny(job.Outcome, next);
            if (finished == job.Outcome)
            {
                await Reap(running, "the job ended", Grace);
                return await job.Outcome;
            }
            while (opened.Reader.TryRead(out int generation))
            {
                await Reap(running, $"generation {generation - 1} ended", EndedGenerationGrace);
                if (job.Outcome.IsCompleted) break;
                running = Spawn(generation);
            }
        }
    }

    List<(SpawnedRank Rank, Task Watched)> Spawn(int generation)
    {
        int world = job.Spec.Options.WorldSize;
        var started = new List<(SpawnedRank, Task)>();
        for (int rank = 0; rank < world; rank++)
        {
            var environment = new Dictionary<string, string>
            {
                ["OEC_COORDINATOR"] = coordinator.ToString(), ["OEC_JOB_ID"] = job.Spec.JobId, ["OEC_JOB_TOKEN"] = job.Spec.Token,
                ["RANK"] = rank.ToString(), ["LOCAL_RANK"] = rank.ToString(), ["WORLD_SIZE"] = world.ToString(), ["LOCAL_WORLD_SIZE"] = world.ToString(),
            };
            SpawnedRank spawned;
            try
            {
                spawned = SpawnedRank.Start(command, rank, environment, log.Echo);
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                job.Abort($"could not start rank {rank}: {command.FileName}: {e.Message}");
                break;
            }
            log.Info($"generation {generation}: started rank {rank} (pid {spawned.Process.Id})");
            Started?.Invoke(generation, rank, spawned.Process);
            started.Add((spawned, Watch(spawned, generation)));
        }
        return started;
    }

    async Task Watch(SpawnedRank spawned, int generation)
    {
        await spawned.Exited;
        int code = spawned.Process.ExitCode;
        if (code == ExitCodes.Success) return;
        string how = code > 128 ? $" (killed by signal {code - 128})" : code switch
        {
            ExitCodes.Refused => " (bad configuration or data)",
            ExitCodes.Restart => " (its generation ended: told by the coordinator, or a peer was lost)",
            ExitCodes.LostCoordinator => " (lost the coordinator)",
            _ => "",
        };
        job.RankExited(generation, spawned.Rank, code, $"rank {spawned.Rank} (pid {spawned.Process.Id}) exited with code {code}{how}");
    }

    /// <summary>Waits for the processes (killing those that outlive <paramref name="grace"/>) and for their exits to be
    /// reported to the job, so that a failed generation is known before the next one starts.</summary>
    // A rank of an ended generation hears so at its next heartbeat and exits at once; one still running after
    // job.heartbeat_timeout_s cannot hear (stopped, or stuck in native code) and would only delay the next generation.
    TimeSpan EndedGenerationGrace => TimeSpan.FromSeconds(Math.Min(Grace.TotalSeconds, job.Spec.Options.HeartbeatTimeoutS));

    async Task Reap(List<(SpawnedRank Rank, Task Watched)> running, string why, TimeSpan grace)
    {
        await SpawnedRank.ReapAsync(running.Select(r => r.Rank).ToList(), grace,
            r => log.Info($"{why}: rank process {r.Process.Id} still runs after {grace.TotalSeconds:0} s; killing it"));
        await Task.WhenAll(running.Select(r => r.Watched));
        foreach (var (r, _) in running) r.Dispose();
    }
}
