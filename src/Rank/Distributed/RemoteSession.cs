// The training session of a rank run by a coordinator: heartbeats, commands, checkpoint commits.
using Coordinator;
using Grpc.Core;
using Job;
using Rank.Training;
using Proto = Coordinator.Protocol;

namespace Rank.Distributed;

/// <summary>
/// A background thread heartbeats every job.heartbeat_interval_s with the steps done and the steps logged since the
/// last heartbeat that got through (at most the newest 1024), so the coordinator's divergence rules see every one.
/// STOP sets StopRequested; RESTART and ABORT end the process at once (exit code ExitCodes.Restart): the rank may be blocked in a
/// collective whose peer is gone, and its state is worthless to the next generation, which starts from the checkpoint.
/// When no heartbeat gets through for job.heartbeat_timeout_s the coordinator is lost and the process ends (exit code ExitCodes.LostCoordinator).
/// </summary>
public sealed class RemoteSession : ITrainingSession, IDisposable
{
    readonly CoordinatorClient client;
    readonly CheckpointCatalog catalog;
    readonly TextWriter console;
    readonly Thread thread;
    readonly CancellationTokenSource done = new();
    readonly Lock gate = new(), sending = new();
    long stepsDone;
    const int MaxQueued = 1024;
    readonly Queue<Proto.StepMetrics> logged = new();
    volatile bool stop;

    public RemoteSession(CoordinatorClient client, Proto.RegisterReply registration, string outDir, TextWriter console)
    {
        (this.client, this.console) = (client, console);
        StartStep = stepsDone = registration.StartStep;
        ResumeFrom = registration.ResumeFrom.Length > 0 ? registration.ResumeFrom : null;
        catalog = new CheckpointCatalog(Path.Combine(outDir, "checkpoints"), _ => { });
        var interval = TimeSpan.FromSeconds(registration.HeartbeatIntervalS);
        var timeout = TimeSpan.FromSeconds(registration.HeartbeatTimeoutS);
        thread = new Thread(() => Beat(interval, timeout)) { IsBackground = true, Name = "heartbeat" };
        thread.Start();
    }

    public long StartStep { get; }
    public string? ResumeFrom { get; }
    public bool StopRequested => stop;

    /// <summary>Stops this rank at a step all ranks agree on (its vote travels in the step's reduction).</summary>
    public void RequestStop() => stop = true;
    public string CheckpointDirectory(long step) => catalog.DirectoryFor(step);

    public void Progress(long steps, StepMetrics? m)
    {
        lock (gate)
        {
            stepsDone = steps;
            if (m is null) return;
            logged.Enqueue(m.ToProto());
            if (logged.Count > MaxQueued) logged.Dequeue();
        }
    }

    public void CheckpointWritten(long step, IReadOnlyList<CheckpointFile> files) => client.Commit(step, files);

    /// <summary>One heartbeat now with every step logged so far, before Finish: the coordinator judges the last steps
    /// by its divergence rules before it hears that the run ended. Throws RpcException when it does not get through.</summary>
    public void Flush() => BeatOnce();

    void BeatOnce()
    {
        lock (sending)
        {
            long steps;
            Proto.StepMetrics[] m;
            lock (gate) (steps, m) = (stepsDone, logged.ToArray());
            var reply = client.Heartbeat(steps, m);
            lock (gate)
                while (logged.TryPeek(out var sent) && sent.Step <= (m.Length > 0 ? m[^1].Step : -1)) logged.Dequeue();
            switch (reply.Command)
            {
                case Proto.Command.Stop:
                    stop = true;
                    break;
                case Proto.Command.Restart or Proto.Command.Abort:
                    console.WriteLine($"rank {client.Rank}: the coordinator says {reply.Command.ToString().ToLowerInvariant()}: {reply.Reason}; exiting");
                    ImmediateExit.Now(ExitCodes.Restart, console);
                    break;
            }
        }
    }

    void Beat(TimeSpan interval, TimeSpan timeout)
    {
        var lastContact = DateTime.UtcNow;
        while (!done.Token.WaitHandle.WaitOne(interval))
        {
            try
            {
                BeatOnce();
                lastContact = DateTime.UtcNow;
            }
            catch (Exception) when (done.IsCancellationRequested)
            {
                return; // the session is ending (its owner reports why); a heartbeat cut short then must not end the process
            }
            catch (RpcException e)
            {
                double silent = (DateTime.UtcNow - lastContact).TotalSeconds;
                if (silent > timeout.TotalSeconds)
                {
                    console.WriteLine($"rank {client.Rank}: lost the coordinator at {client.Address}: no heartbeat got through for {silent:0} s " +
                                      $"(last error: {e.Status.StatusCode}: {e.Status.Detail}); exiting");
                    ImmediateExit.Now(ExitCodes.LostCoordinator, console);
                }
            }
        }
    }

    public void Dispose()
    {
        done.Cancel();
        thread.Join(TimeSpan.FromSeconds(15));
    }
}
