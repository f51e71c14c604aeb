// One dedicated thread per communicator that runs the send half of each ring operation while the caller receives.
using System.Collections.Concurrent;

namespace Collectives;

internal sealed class SendJob(Action body)
{
    private readonly ManualResetEventSlim _done = new();
    public Exception? Error { get; private set; }

    public void Run()
    {
        try { body(); }
        catch (Exception e) { Error = e; }
        finally { _done.Set(); }
    }

    /// <summary>False when the job did not finish within the timeout.</summary>
    public bool Wait(TimeSpan timeout) => _done.Wait(timeout);
}

internal sealed class SendWorker : IDisposable
{
    private readonly BlockingCollection<SendJob> _jobs = new();
    private readonly Thread _thread;

    public SendWorker(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public SendJob Post(Action body)
    {
        var job = new SendJob(body);
        _jobs.Add(job);
        return job;
    }

    public void Dispose()
    {
        _jobs.CompleteAdding();
        _thread.Join(TimeSpan.FromSeconds(5)); // a job blocked in a socket call fails once the sockets are closed
    }

    private void Loop()
    {
        foreach (var job in _jobs.GetConsumingEnumerable()) job.Run();
    }
}

/// <summary>How many segments the receive half has finished; the send half waits on it to forward them.</summary>
internal sealed class Progress
{
    private readonly object _gate = new();
    private long _done;
    private bool _aborted;

    public void Advance()
    {
        lock (_gate) { _done++; Monitor.PulseAll(_gate); }
    }

    public void Abort()
    {
        lock (_gate) { _aborted = true; Monitor.PulseAll(_gate); }
    }

    /// <summary>Waits until at least <paramref name="count"/> segments are done; false on timeout; throws when aborted.</summary>
    public bool WaitFor(long count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (_gate)
        {
            while (_done < count)
            {
                if (_aborted) throw new OperationCanceledException("ring operation aborted");
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) return false;
                Monitor.Wait(_gate, left);
            }
            return true;
        }
    }
}
