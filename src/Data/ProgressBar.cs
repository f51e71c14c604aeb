// A single-line, in-place progress bar (percent of input bytes and MB/s), redrawn at most four times a second.
using System.Diagnostics;
using System.Globalization;

namespace Data;

internal sealed class ProgressBar(TextWriter log, long totalBytes)
{
    private const int Width = 30;
    private static readonly TimeSpan Interval = TimeSpan.FromMilliseconds(250);

    private readonly Stopwatch clock = Stopwatch.StartNew();
    private TimeSpan lastDraw = -Interval;

    /// <summary>Redraws if at least Interval passed since the last redraw.</summary>
    public void Report(long bytesDone)
    {
        if (clock.Elapsed - lastDraw >= Interval)
        {
            Draw(bytesDone);
        }
    }

    /// <summary>Draws the final state and ends the line.</summary>
    public void Finish(long bytesDone)
    {
        Draw(bytesDone);
        log.WriteLine();
        log.Flush();
    }

    private void Draw(long bytesDone)
    {
        lastDraw = clock.Elapsed;
        double fraction = totalBytes > 0 ? Math.Clamp((double)bytesDone / totalBytes, 0, 1) : 1;
        int filled = (int)(fraction * Width);
        double megabytesPerSecond = bytesDone / 1e6 / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
        string bar = new string('#', filled) + new string('.', Width - filled);
        log.Write(string.Create(CultureInfo.InvariantCulture, $"\rprepare [{bar}] {fraction * 100,5:F1}%  {megabytesPerSecond,7:F1} MB/s"));
        log.Flush();
    }
}
