// The coordinator's log: what happened to the job, one timestamped line each, on the console and in coordinator.log.
namespace Coordinator;

public sealed class JobLog : IDisposable
{
    readonly Lock gate = new();
    readonly TextWriter? console;
    readonly StreamWriter? file;
    bool broken;

    /// <param name="console">Where lines are echoed (null: nowhere).</param>
    /// <param name="path">Appended to (null: no file); flushed after every line so a crash keeps all of it.</param>
    public JobLog(TextWriter? console, string? path)
    {
        this.console = console;
        if (path is not null)
        {
            Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
            file = new StreamWriter(new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        }
    }

    public void Info(string message)
    {
        string line = $"{DateTime.UtcNow:HH:mm:ss.fff} coordinator: {message}";
        lock (gate)
        {
            console?.WriteLine(line);
            Append(line);
        }
    }

    // Caller holds the gate. A full disk stops the file, not the coordinator: its lines go on on the console.
    void Append(string line)
    {
        if (file is null || broken) return;
        try
        {
            file.WriteLine(line);
        }
        catch (IOException e)
        {
            broken = true;
            console?.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} coordinator: cannot write coordinator.log ({e.Message}); its lines go on here only");
        }
    }

    /// <summary>Writes a line as it is (a rank's output with its prefix) to the console only.</summary>
    public void Echo(string line)
    {
        lock (gate) console?.WriteLine(line);
    }

    public void Dispose()
    {
        lock (gate)
        {
            try { file?.Dispose(); }
            catch (IOException) { } // the last buffered bytes did not fit: what was written stays
        }
    }
}
