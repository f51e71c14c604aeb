// job.resume: whether a job continues the run in run.out_dir — false, true, or auto — as JSON false, true or "auto".
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Job;

public enum ResumeMode
{
    /// <summary>false: start afresh; a run.out_dir that holds a run is refused rather than written over.</summary>
    No,
    /// <summary>true: continue from the newest valid checkpoint; a run.out_dir with none (a mistyped path, a run that
    /// never checkpointed) is refused, naming what it holds.</summary>
    Yes,
    /// <summary>auto: continue when there is a checkpoint, start afresh in a directory that holds no run: the coordinator
    /// of a cluster job, started the same way the first time and after every restart.</summary>
    Auto,
}

/// <summary>Reads true, false, "true", "false" and "auto"; writes a boolean for true and false (what configurations and
/// checkpoints written before "auto" existed hold).</summary>
public sealed class ResumeModeConverter : JsonConverter<ResumeMode>
{
    public override ResumeMode Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
    {
        JsonTokenType.True => ResumeMode.Yes,
        JsonTokenType.False => ResumeMode.No,
        JsonTokenType.String => reader.GetString() switch
        {
            "true" => ResumeMode.Yes,
            "false" => ResumeMode.No,
            "auto" => ResumeMode.Auto,
            var other => throw new JsonException($"'{other}': expected true, false or auto"),
        },
        _ => throw new JsonException($"{reader.TokenType}: expected true, false or auto"),
    };

    public override void Write(Utf8JsonWriter writer, ResumeMode value, JsonSerializerOptions options)
    {
        if (value == ResumeMode.Auto) writer.WriteStringValue("auto");
        else writer.WriteBooleanValue(value == ResumeMode.Yes);
    }
}
