// Headless Chromium for the tests that load the live page: found at /usr/bin/chromium, installed by
// build/install-test-deps.sh when missing and we run as root, run with a timeout and killed when it passes.
using System.Diagnostics;

namespace Coordinator.UnitTests;

internal static class Chromium
{
    const string Program = "/usr/bin/chromium";
    const string InstallScript = "build/install-test-deps.sh";
    static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(90), InstallTimeout = TimeSpan.FromMinutes(10);
    static readonly SemaphoreSlim InstallGate = new(1, 1);

    /// <summary>Loads <paramref name="url"/> in a fresh profile at 1280 x 1600 px, lets 8 s of page time pass (the
    /// page's timers run, fetches are waited for) and saves a screenshot there.</summary>
    public static Task Screenshot(Uri url, string png) => Run(url, $"--screenshot={png}");

    /// <summary>The page's DOM after 8 s of page time, as HTML.</summary>
    public static Task<string> DumpDom(Uri url) => Run(url, "--dump-dom");

    static async Task<string> Run(Uri url, string what)
    {
        await EnsureInstalled();
        using var profile = new TempDir();
        var start = new ProcessStartInfo(Program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync", $"--user-data-dir={profile.Path}",
                     "--window-size=1280,1600", "--virtual-time-budget=8000", what, url.ToString() })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{Program} did not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(RunTimeout);
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{Program} {what} {url} ran past {RunTimeout.TotalSeconds:0} s and was killed; stderr:\n{await stderr}");
        }
        if (process.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"{Program} {what} {url} exited with code {process.ExitCode}; stderr:\n{await stderr}");
        return await stdout;
    }

    /// <summary>Runs build/install-test-deps.sh once (one process at a time: a lock file) if chromium is missing.</summary>
    static async Task EnsureInstalled()
    {
        if (File.Exists(Program)) return;
        if (!Environment.IsPrivilegedProcess)
            throw new Xunit.Sdk.XunitException($"{Program} is missing: run {InstallScript} (as root or with sudo) to install it");
        string root = RepositoryRoot();
        await InstallGate.WaitAsync(InstallTimeout);
        try
        {
            using var lockFile = await LockFile(Path.Combine(Path.GetTempPath(), "oec-install-test-deps.lock"));
            if (File.Exists(Program)) return;
            var start = new ProcessStartInfo("bash") { WorkingDirectory = root, RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add(InstallScript);
            using var install = Process.Start(start) ?? throw new InvalidOperationException($"bash {InstallScript} did not start");
            var output = Task.WhenAll(install.StandardOutput.ReadToEndAsync(), install.StandardError.ReadToEndAsync());
            try
            {
                await install.WaitForExitAsync().WaitAsync(InstallTimeout);
            }
            catch (TimeoutException)
            {
                install.Kill(entireProcessTree: true);
                throw new Xunit.Sdk.XunitException($"{InstallScript} ran past {InstallTimeout.TotalMinutes:0} min and was killed");
            }
            if (install.ExitCode != 0 || !File.Exists(Program))
                throw new Xunit.Sdk.XunitException($"{InstallScript} exited with code {install.ExitCode} and {Program} is {(File.Exists(Program) ? "there" : "still missing")}:\n{string.Join("\n", await output)}");
        }
        finally
        {
            InstallGate.Release();
        }
    }

    static async Task<FileStream> LockFile(string path)
    {
        var deadline = DateTime.UtcNow + InstallTimeout;
        while (true)
        {
            try
            {
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(200)); // another test process is installing
            }
        }
    }

    static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Distributed.sln"))) return dir.FullName;
        throw new Xunit.Sdk.XunitException($"no Distributed.sln above {AppContext.BaseDirectory}: cannot find {InstallScript}");
    }
}
