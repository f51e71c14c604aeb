// The JSON-lines metrics log of a run: one object per logged step, the names later exported as metrics; steps undone
// by a rollback or a restart stay in it, marked.
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Job;

public sealed class MetricsLog : IDisposable
{
    static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals, // a diverged loss is logged as "NaN" ("Infinity", "-Infinity")
        RespectRequiredConstructorParameters = true, // a line missing a field is malformed, not a step of zeros
    };

    readonly StreamWriter writer;

    /// <param name="keepThrough">The step the run starts after: 0, or the checkpoint it resumed from. The lines of an
    /// existing log are kept; those of later steps (logged before the run went back to that checkpoint) are marked with
    /// rolled_back_to = keepThrough, unless marked already. A torn last line (the one write a crash can tear: each line is
    /// appended and flushed whole) is dropped; a torn line before it is an error naming the file and the line.</param>
    public MetricsLog(string path, long keepThrough = 0)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        if (File.Exists(path)) MarkRolledBack(path, keepThrough);
        writer = new StreamWriter(path, append: true);
    }

    static void MarkRolledBack(string path, long keepThrough)
    {
        var lines = File.ReadAllLines(path);
        if (lines.Length > 0 && !IsRecord(lines[^1])) lines = lines[..^1]; // torn by a crash mid-write
        var kept = lines.Select((line, i) => ParseAt(path, line, i + 1) is { RolledBackTo: null, Step: var step } m && step > keepThrough
            ? JsonSerializer.Serialize(m with { RolledBackTo = keepThrough }, Json) : line).ToList();
        AtomicFile.Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); foreach (var line in kept) w.WriteLine(line); });
    }

    static bool IsRecord(string line)
    {
        try { Parse(line); return true; }
        catch (JsonException) { return false; }
    }

    static StepMetrics Parse(string line) =>
        JsonSerializer.Deserialize<StepMetrics>(line, Json) ?? throw new JsonException("the line is null, not a record");

    /// <summary>Appends one line and flushes, so a crashed run keeps every step logged before it.</summary>
    public void Write(StepMetrics metrics)
    {
        writer.WriteLine(JsonSerializer.Serialize(metrics, Json));
        writer.Flush();
    }

    /// <summary>The run's curve: every logged step that was not rolled back, in file order (ascending steps). A line that
    /// is not one whole record is a DataFormatException naming the file and the line (counted from 1).</summary>
    public static IReadOnlyList<StepMetrics> Read(string path) => [.. ReadAll(path).Where(m => m.RolledBackTo is null)];

    /// <summary>Every line in file order, the rolled-back steps (RolledBackTo set) among the curve's.</summary>
    public static IReadOnlyList<StepMetrics> ReadAll(string path)
    {
        var steps = new List<StepMetrics>();
        int number = 0;
        foreach (string line in File.ReadLines(path)) steps.Add(ParseAt(path, line, ++number));
        return steps;
    }

    /// <summary>The rolled-back lines of <paramref name="all"/> (file order) as passes: runs of consecutive marked lines in
    /// ascending steps, each what one attempt logged before it was undone.</summary>
    public static IReadOnlyList<IReadOnlyList<StepMetrics>> RolledBackRuns(IEnumerable<StepMetrics> all)
    {
        var runs = new List<List<StepMetrics>>();
        StepMetrics? previous = null;
        foreach (var m in all)
        {
            if (m.RolledBackTo is not null)
            {
                if (previous?.RolledBackTo is null || previous.Step >= m.Step) runs.Add([]);
                runs[^1].Add(m);
            }
            previous = m;
        }
        return runs;
    }

    /// <summary>Line <paramref name="number"/> (from 1) of <paramref name="path"/> as a record, or a DataFormatException
    /// naming both.</summary>
    static StepMetrics ParseAt(string path, string line, int number)
    {
        try
        {
            return Parse(line);
        }
        catch (JsonException e)
        {
            // The serializer's own position ("LineNumber: 0 | BytePositionInLine: 7") counts within the line.
            string reason = e.Message.Split(" Path: ")[0];
            string at = e.BytePositionInLine is long b ? $" at byte {b}" : "";
            throw new Data.DataFormatException($"{path} line {number}: not a metrics record{at}: {reason}");
        }
    }

    public void Dispose() => writer.Dispose();
}
