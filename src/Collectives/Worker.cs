// A dedicated thread that runs posted jobs in order: the send half of each ring pass, and the queued async all-reduces.
using System.Collections.Concurrent;

namespace Collectives;

internal sealed class Job(Action body)
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

internal sealed class Worker : IDisposable
{
    private readonly BlockingCollection<Job> _jobs = new();
    private readonly Thread _thread;
    private long _finished;

    /// <summary>Jobs run so far (successful or not): a waiter's sign of progress.</summary>
    public long Finished => Interlocked.Read(ref _finished);

    public Worker(string name)
    {
        _thread = new Thread(Loop) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public Job Post(Action body)
    {
        var job = new Job(body);
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
        foreach (var job in _jobs.GetConsumingEnumerable())
        {
            job.Run();
            Interlocked.Increment(ref _finished);
        }
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
