// A dedicated thread that runs posted jobs in order: the send half of each ring pass, and the queued async all-reduces.
using System.Collections.Concurrent;

namespace Collectives;

internal sealed class Job(Action body)
{
    private readonly ManualResetEventSlim done = new();
    public Exception? Error { get; private set; }

    public void Run()
    {
        try { body(); }
        catch (Exception e) { Error = e; }
        finally { done.Set(); }
    }

    /// <summary>False when the job did not finish within the timeout.</summary>
    public bool Wait(TimeSpan timeout) => done.Wait(timeout);
}

internal sealed class Worker : IDisposable
{
    private readonly BlockingCollection<Job> jobs = new();
    private readonly Thread thread;
    private long finished;

    /// <summary>Jobs run so far (successful or not): a waiter's sign of progress.</summary>
    public long Finished => Interlocked.Read(ref finished);

    public Worker(string name)
    {
        thread = new Thread(Loop) { IsBackground = true, Name = name };
        thread.Start();
    }

    public Job Post(Action body)
    {
        var job = new Job(body);
        jobs.Add(job);
        return job;
    }

    public void Dispose()
    {
        jobs.CompleteAdding();
        thread.Join(TimeSpan.FromSeconds(5)); // a job blocked in a socket call fails once the sockets are closed
    }

    private void Loop()
    {
        foreach (var job in jobs.GetConsumingEnumerable())
        {
            job.Run();
            Interlocked.Increment(ref finished);
        }
    }
}

/// <summary>How many segments the receive half has finished; the send half waits on it to forward them.</summary>
internal sealed class Progress
{
    private readonly object gate = new();
    private long done;
    private bool aborted;

    public void Advance()
    {
        lock (gate) { done++; Monitor.PulseAll(gate); }
    }

    public void Abort()
    {
        lock (gate) { aborted = true; Monitor.PulseAll(gate); }
    }

    /// <summary>Waits until at least <paramref name="count"/> segments are done; false on timeout; throws when aborted.</summary>
    public bool WaitFor(long count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (gate)
        {
            while (done < count)
            {
                if (aborted) throw new OperationCanceledException("ring operation aborted");
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero) return false;
                Monitor.Wait(gate, left);
            }
            return true;
        }
    }
}
