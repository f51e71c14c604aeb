// The JSON-lines metrics log of a run: one object per logged step, the names later exported as metrics.
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

    /// <param name="keepThrough">0: a new log. Else a resumed run: the lines of steps up to this one are kept and
    /// later ones (written after the checkpoint the run resumes from) dropped. A torn last line (the one write a crash
    /// can tear: each line is appended and flushed whole) is dropped with them; a torn line before it is an error naming
    /// the file and the line.</param>
    public MetricsLog(string path, long keepThrough = 0)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        if (keepThrough > 0 && File.Exists(path))
        {
            var lines = File.ReadAllLines(path);
            if (lines.Length > 0 && !IsRecord(lines[^1])) lines = lines[..^1]; // torn by a crash mid-write
            var kept = lines.Where((line, i) => ParseAt(path, line, i + 1).Step <= keepThrough).ToList();
            AtomicFile.Write(path, s => { using var w = new StreamWriter(s, leaveOpen: true); foreach (var line in kept) w.WriteLine(line); });
        }
        writer = new StreamWriter(path, append: keepThrough > 0);
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

    /// <summary>Every logged step, in file order. A line that is not one whole record is a DataFormatException naming the
    /// file and the line (counted from 1).</summary>
    public static IReadOnlyList<StepMetrics> Read(string path)
    {
        var steps = new List<StepMetrics>();
        int number = 0;
        foreach (string line in File.ReadLines(path)) steps.Add(ParseAt(path, line, ++number));
        return steps;
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
