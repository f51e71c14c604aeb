// Runs a python program to its end under a time limit: how oecrun asks python where torch is, and runs the PyTorch reference.
using System.Diagnostics;

namespace Rank;

public static class Python
{
    /// <summary>
    /// Standard output, and standard error as lines. Throws InvalidOperationException beginning with
    /// <paramref name="what"/> when the program cannot start, runs past <paramref name="timeout"/> (then it is killed
    /// with its children), or exits with another code than 0; the last error line says why.
    /// </summary>
    public static (string Output, string[] ErrorLines) Run(string python, IReadOnlyList<string> args, TimeSpan timeout, string what)
    {
        var info = new ProcessStartInfo(python, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        Process process;
        try { process = Process.Start(info)!; }
        catch (System.ComponentModel.Win32Exception e) { throw new InvalidOperationException($"{what} could not start: {e.Message}; expected {python} on PATH with torch installed", e); }
        using var _ = process;
        var output = process.StandardOutput.ReadToEndAsync(); // both pipes drained at once: a full one would block the child
        var errors = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{what} did not finish within {timeout.TotalSeconds:F0} s");
        }
        string[] errorLines = errors.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{what} exited with code {process.ExitCode}: {errorLines.LastOrDefault() ?? "no output"}");
        return (output.Result, errorLines);
    }
}
