// Starts oecrun commands as child processes of a test; compiled into the test projects that drive the program.
using System.Diagnostics;
using OecRun.Launching;

namespace Tests;

internal static class ChildProcesses
{
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
