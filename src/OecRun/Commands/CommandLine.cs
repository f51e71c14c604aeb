// What every command shares: the configuration file and overrides, the error guard (exit code 2) and the stop signals.
using System.CommandLine;
using System.Runtime.InteropServices;
using Rank.Configuration;

namespace OecRun.Commands;

/// <summary>The configuration file and the section.key=value overrides over it, as a command's options record.</summary>
public sealed record RunSettings(string? ConfigFile = null, IReadOnlyList<string>? Overrides = null)
{
    /// <summary>The resolved and validated configuration (defaults, then the file, then the overrides).</summary>
    public RunConfig Load() => RunConfig.Load(ConfigFile, Overrides ?? []);
}

public static class CommandLine
{
    public static Option<string?> ConfigOption(string description = "JSON configuration file (sections model, oec, data, train, run, job, divergence).") =>
        new("--config") { Description = description };

    /// <param name="example">Overrides the command accepts, for its help: keys it sets itself would be refused or replaced.</param>
    public static Argument<string[]> OverridesArgument(string example = "train.learning_rate=1e-3 oec.method=mu_loss job.world_size=4") => new("overrides")
    {
        Description = $"Settings over the file, as section.key=value, e.g. {example}.",
        Arity = ArgumentArity.ZeroOrMore,
    };

    /// <summary>Binds --config and the overrides of a command whose options are just these (and a few of its own).</summary>
    public static OptionBinder<RunSettings> RunSettings(Command command)
    {
        var binder = new OptionBinder<RunSettings>(command, new RunSettings());
        binder.Add(ConfigOption(), (o, v) => o with { ConfigFile = v });
        binder.Add(OverridesArgument(), (o, v) => o with { Overrides = v ?? [] });
        return binder;
    }

    /// <summary>Sets <paramref name="command"/>'s action to <paramref name="action"/> under <see cref="Guard"/>.</summary>
    public static void SetGuardedAction(this Command command, Func<ParseResult, int> action) =>
        command.SetAction(parse => Guard(() => action(parse)));

    /// <summary>Bad settings, bad data and paths this user may not write end the program with one clear line and exit
    /// code 2 (OEC_TRACE=1 adds the stack).</summary>
    public static int Guard(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or Data.DataFormatException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine(Environment.GetEnvironmentVariable("OEC_TRACE") == "1" ? $"error: {e}" : $"error: {e.Message}");
            return Job.ExitCodes.Refused;
        }
    }

    /// <summary>
    /// Cancelled by the first SIGINT (Ctrl+C), SIGTERM (Kubernetes, systemd, any supervisor) or SIGHUP (the terminal
    /// closed), which then leaves the process running so that the job (or sweep) stops at a checkpoint; a second such
    /// signal ends the process at once (a job's ranks then lose the coordinator and exit; a sweep's half-done cells
    /// start afresh next time).
    /// </summary>
    public static StopSignals FirstInterrupt() => new();

    /// <summary><paramref name="path"/>, the directory a command writes to (<paramref name="setting"/> names where it
    /// was given): refused when it, or a folder it would lie in, is a file. Creates nothing.</summary>
    public static string OutputDirectory(string path, string setting)
    {
        for (string? p = Path.GetFullPath(path); p is not null && !Directory.Exists(p); p = Path.GetDirectoryName(p))
        {
            if (File.Exists(p))
                throw new ArgumentException(Path.GetFullPath(path) == p ? $"{setting} = '{path}': is a file, expected a directory"
                    : $"{setting} = '{path}': lies under '{p}', which is a file, not a directory");
        }
        return path;
    }

    /// <summary>A TCP port given as <paramref name="flag"/>: 0 (any free port) to 65535.</summary>
    public static int Port(string flag, int port) =>
        port is >= 0 and <= 65535 ? port : throw new ArgumentException($"{flag} {port}: not a TCP port; expected 0 (any free port) to 65535");

    /// <summary>A comma-separated list, its entries trimmed and empty ones dropped.</summary>
    public static string[] SplitList(string text) => text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}

/// <summary>The stop signals of a command that stops at a checkpoint: Token is cancelled by the first; the handlers
/// are removed on Dispose.</summary>
public sealed class StopSignals : IDisposable
{
    readonly CancellationTokenSource first = new();
    readonly PosixSignalRegistration[] registrations;
    int received;

    readonly string saying;

    /// <param name="saying">What the first signal prints after its name.</param>
    public StopSignals(string saying = "stopping at the next step all ranks agree on, after a checkpoint (again to end at once)")
    {
        this.saying = saying;
        registrations = [.. new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM, PosixSignal.SIGHUP }.Select(signal => PosixSignalRegistration.Create(signal, OnSignal))];
    }

    public CancellationToken Token => first.Token;

    void OnSignal(PosixSignalContext context)
    {
        if (Interlocked.Increment(ref received) > 1) return; // the default action: the process ends
        context.Cancel = true;
        Console.Error.WriteLine($"{context.Signal}: {saying}");
        first.Cancel();
    }

    public void Dispose()
    {
        foreach (var r in registrations) r.Dispose();
        first.Dispose();
    }
}
