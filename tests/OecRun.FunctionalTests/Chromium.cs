// Headless Chromium for the tests that load the live page: found on PATH (TestPrograms installs it when missing and we
// run as root), run with a timeout and killed when it passes.
using System.Diagnostics;
using Coordinator.UnitTests;

namespace OecRun.FunctionalTests;

internal static class Chromium
{
    static readonly TimeSpan RunTimeout = TimeSpan.FromSeconds(90);

    /// <summary>Loads <paramref name="url"/> in a fresh profile at 1280 x 1600 px, lets 8 s of page time pass (the
    /// page's timers run, fetches are waited for) and saves a screenshot there.</summary>
    public static Task Screenshot(Uri url, string png) => Run(url, $"--screenshot={png}");

    /// <summary>The page's DOM after 8 s of page time, as HTML.</summary>
    public static Task<string> DumpDom(Uri url) => Run(url, "--dump-dom");

    static async Task<string> Run(Uri url, string what)
    {
        string program = TestPrograms.Require("chromium");
        using var profile = new TempDir();
        var start = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync", $"--user-data-dir={profile.Path}",
                     "--window-size=1280,1600", "--virtual-time-budget=8000", what, url.ToString() })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start) ?? throw new InvalidOperationException($"{program} did not start");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            await process.WaitForExitAsync().WaitAsync(RunTimeout);
        }
        catch (TimeoutException)
        {
            process.Kill(entireProcessTree: true);
            throw new Xunit.Sdk.XunitException($"{program} {what} {url} ran past {RunTimeout.TotalSeconds:0} s and was killed; stderr:\n{await stderr}");
        }
        if (process.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"{program} {what} {url} exited with code {process.ExitCode}; stderr:\n{await stderr}");
        return await stdout;
    }
}
