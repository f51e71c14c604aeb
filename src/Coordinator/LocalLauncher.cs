// A whole job on one machine: rank processes started, their output streamed with a prefix, respawned after failures.
using System.Diagnostics;
using System.Threading.Channels;

namespace Coordinator;

/// <summary>How to start one rank process: the program and its arguments (the launcher adds the environment).</summary>
public sealed record RankCommand(string FileName, IReadOnlyList<string> Arguments);

/// <summary>
/// Starts job.world_size rank processes per generation with the torchrun-style environment (RANK, WORLD_SIZE,
/// LOCAL_RANK, LOCAL_WORLD_SIZE) plus OEC_COORDINATOR, OEC_JOB_ID and OEC_JOB_TOKEN. A rank that exits with a non-zero
/// code fails its generation; when the coordinator opens the next one, the old processes get a grace period to exit
/// and are then killed, and a fresh set starts. Returns the job's outcome once every process is gone.
/// </summary>
public sealed class LocalLauncher(JobState job, JobLog log, RankCommand command, Uri coordinator)
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
                await Reap(running, "the job ended");
                return await job.Outcome;
            }
            while (opened.Reader.TryRead(out int generation))
            {
                await Reap(running, $"generation {generation - 1} ended");
                if (job.Outcome.IsCompleted) break;
                running = Spawn(generation);
            }
        }
    }

    List<(Process Process, Task Exited)> Spawn(int generation)
    {
        int world = job.Spec.Options.WorldSize;
        var started = new List<(Process, Task)>();
        for (int rank = 0; rank < world; rank++)
        {
            var info = new ProcessStartInfo(command.FileName)
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var a in command.Arguments) info.ArgumentList.Add(a);
            info.Environment["OEC_COORDINATOR"] = coordinator.ToString();
            info.Environment["OEC_JOB_ID"] = job.Spec.JobId;
            info.Environment["OEC_JOB_TOKEN"] = job.Spec.Token;
            info.Environment["RANK"] = info.Environment["LOCAL_RANK"] = rank.ToString();
            info.Environment["WORLD_SIZE"] = info.Environment["LOCAL_WORLD_SIZE"] = world.ToString();
            var process = new Process { StartInfo = info };
            string prefix = $"[rank {rank}] ";
            process.OutputDataReceived += (_, e) => { if (e.Data is not null) log.Echo(prefix + e.Data); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) log.Echo(prefix + e.Data); };
            try
            {
                process.Start();
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                job.Abort($"could not start rank {rank}: {command.FileName}: {e.Message}");
                break;
            }
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            log.Info($"generation {generation}: started rank {rank} (pid {process.Id})");
            Started?.Invoke(generation, rank, process);
            int r = rank;
            started.Add((process, Watch(process, generation, r)));
        }
        return started;
    }

    async Task Watch(Process process, int generation, int rank)
    {
        await process.WaitForExitAsync();
        int code = process.ExitCode;
        if (code == 0) return;
        string how = code > 128 ? $" (killed by signal {code - 128})" : code switch
        {
            2 => " (bad configuration or data)",
            4 => " (told to stop by the coordinator)",
            5 => " (lost the coordinator)",
            _ => "",
        };
        job.FailGeneration(generation, $"rank {rank} (pid {process.Id}) exited with code {code}{how}");
    }

    async Task Reap(List<(Process Process, Task Exited)> processes, string why)
    {
        var all = Task.WhenAll(processes.Select(p => p.Exited));
        if (await Task.WhenAny(all, Task.Delay(Grace)) != all)
        {
            foreach (var (p, _) in processes.Where(p => !p.Process.HasExited))
            {
                log.Info($"{why}: rank process {p.Id} still runs after {Grace.TotalSeconds:0} s; killing it");
                try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            }
            await all;
        }
        foreach (var (p, _) in processes) p.Dispose();
    }
}
