// The run directory's lock: `<run.out_dir>/.lock`, held by the process that owns the run for the job's whole life.
using System.Collections.Concurrent;

namespace OecRun.Launching;

/// <summary>
/// An OS record lock (fcntl, through FileStream.Lock) on `.lock` in the run directory, so that two jobs never write into
/// one directory. The kernel drops it when the holder exits however it exits (kill -9 included), so a crashed run resumes
/// without cleaning up; the file itself stays. It holds "pid P on host H since T" of the holder for the message of a
/// job that finds it taken. A record lock does not exclude the process that holds it, so this process's own locks are
/// kept in a set as well.
/// </summary>
public sealed class RunDirectoryLock : IDisposable
{
    public const string FileName = ".lock";

    static readonly ConcurrentDictionary<string, bool> HeldHere = new();

    readonly FileStream file;

    RunDirectoryLock(FileStream file) => this.file = file;

    /// <summary>Takes the lock of <paramref name="outDir"/> (created if missing), or throws InvalidOperationException
    /// naming the directory and the holder recorded in the lock file.</summary>
    public static RunDirectoryLock Acquire(string outDir)
    {
        Directory.CreateDirectory(outDir);
        string path = Path.GetFullPath(Path.Combine(outDir, FileName));
        if (!HeldHere.TryAdd(path, true)) throw Taken(outDir, path, $"this process (pid {Environment.ProcessId})");
        FileStream? file = null;
        try
        {
            file = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite);
            if (!OperatingSystem.IsMacOS()) file.Lock(0, 1); // .NET has no record locks on macOS: there only this process's set guards
        }
        catch (IOException) when (file is not null)
        {
            string holder = new StreamReader(file).ReadToEnd().Trim();
            file.Dispose();
            HeldHere.TryRemove(path, out _);
            throw Taken(outDir, path, holder.Length > 0 ? holder : "a process that has not yet recorded itself");
        }
        catch
        {
            HeldHere.TryRemove(path, out _); // the file could not be opened: the exception names it
            throw;
        }
        file.SetLength(0);
        using (var w = new StreamWriter(file, leaveOpen: true))
            w.WriteLine($"pid {Environment.ProcessId} on host {Environment.MachineName} since {DateTime.UtcNow:yyyy-MM-ddTHH:mm:ssZ}");
        file.Flush(flushToDisk: true);
        return new RunDirectoryLock(file);
    }

    static InvalidOperationException Taken(string outDir, string path, string holder) =>
        new($"run.out_dir = '{outDir}' is in use by another job: {holder} holds its lock {path}; " +
            "wait for that job to end (or stop it), or choose another run.out_dir");

    public void Dispose()
    {
        string path = file.Name;
        file.Dispose(); // closing the file releases the lock
        HeldHere.TryRemove(path, out _);
    }
}
