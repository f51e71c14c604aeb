// The programs the tests drive for real (prometheus, promtool, chromium, kubectl, Debian's python with torch) and the repository root; compiled into every test project that needs them.
using System.Diagnostics;

namespace Tests;

internal static class TestPrograms
{
    const string InstallScript = "build/install-test-deps.sh";

    // apt-get cannot run twice at once, and test projects run as parallel processes: a lock file serialises the
    // installs of every test process on this machine.
    static readonly string LockPath = Path.Combine(Path.GetTempPath(), "oec-install-test-deps.lock");
    static readonly TimeSpan InstallTimeout = TimeSpan.FromMinutes(10);
    static readonly Lock Gate = new();

    /// <summary>The first directory above the test binaries that holds Distributed.sln.</summary>
    public static string RepositoryRoot { get; } = FindRoot();

    /// <summary>The full path of `name` on PATH. When it is missing and the tests run as root, build/install-test-deps.sh
    /// installs the test programs first (once per machine at a time); otherwise the test fails naming the script.</summary>
    public static string Require(string name)
    {
        Install(() => OnPath(name) is not null, $"'{name}' is not on PATH", $"'{name}' is still not on PATH");
        return OnPath(name)!;
    }

    /// <summary>Debian's python, /usr/bin/python3, once it imports torch (python3-torch: PyTorch 1.13, CPU), installed as
    /// <see cref="Require"/> installs a program. Not the python3 first on PATH, which may be another without torch.</summary>
    public static string RequirePythonTorch()
    {
        const string python = "/usr/bin/python3";
        Install(() => Imports(python, "torch"), $"{python} cannot import torch", $"{python} still cannot import torch");
        return python;
    }

    static void Install(Func<bool> present, string missing, string stillMissing)
    {
        if (present()) return;
        lock (Gate)
        {
            if (!Environment.IsPrivilegedProcess)
                throw new InvalidOperationException($"{missing}; install the test programs with sudo {InstallScript} (needs root)");
            using (AcquireInstallLock()) if (!present()) RunInstallScript();
            if (!present()) throw new InvalidOperationException($"{stillMissing} after {InstallScript} ran");
        }
    }

    static bool Imports(string python, string module)
    {
        if (!File.Exists(python)) return false;
        using var p = Process.Start(new ProcessStartInfo(python, ["-c", $"import {module}"]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        _ = p.StandardOutput.ReadToEndAsync();
        _ = p.StandardError.ReadToEndAsync();
        return p.WaitForExit(TimeSpan.FromMinutes(1)) && p.ExitCode == 0;
    }

    static string? OnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, name)).FirstOrDefault(File.Exists);

    static FileStream AcquireInstallLock()
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            try { return new FileStream(LockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None); }
            catch (IOException) when (clock.Elapsed < InstallTimeout) { Thread.Sleep(200); }
            catch (IOException e) { throw new TimeoutException($"{LockPath} stayed locked for {InstallTimeout.TotalMinutes} min (another install?)", e); }
        }
    }

    static void RunInstallScript()
    {
        var info = new ProcessStartInfo("bash", [Path.Combine(RepositoryRoot, InstallScript)]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var script = Process.Start(info)!;
        var output = script.StandardOutput.ReadToEndAsync();
        var errors = script.StandardError.ReadToEndAsync();
        if (!script.WaitForExit(InstallTimeout))
        {
            script.Kill(entireProcessTree: true);
            throw new TimeoutException($"{InstallScript} did not finish within {InstallTimeout.TotalMinutes} min");
        }
        if (script.ExitCode != 0)
            throw new InvalidOperationException($"{InstallScript} exited with code {script.ExitCode}:\n{output.Result}{errors.Result}");
    }

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Distributed.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"no Distributed.sln in any directory above {AppContext.BaseDirectory}");
    }
}
