// Starts oecrun commands as child processes of a test; compiled into the test projects that drive the program.
using System.Diagnostics;
using OecRun.Launching;

namespace Tests;

internal static partial class ChildProcesses
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);

    /// <summary>Sends a POSIX signal (15 SIGTERM, 1 SIGHUP, 2 SIGINT) to a child, as a supervisor would; throws if it cannot.</summary>
    public static void Signal(Process process, int signal)
    {
        if (Kill(process.Id, signal) != 0) throw new InvalidOperationException($"kill({process.Id}, {signal}) failed");
    }

    /// <summary>Starts a command with its output redirected; an environment value of null removes the variable.</summary>
    public static Process Start(ProcessCommand command, Dictionary<string, string?> environment)
    {
        var info = new ProcessStartInfo(command.FileName) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in command.Arguments) info.ArgumentList.Add(a);
        foreach (var (name, value) in environment)
            if (value is null) info.Environment.Remove(name);
            else info.Environment[name] = value;
        return Process.Start(info)!;
    }
}
