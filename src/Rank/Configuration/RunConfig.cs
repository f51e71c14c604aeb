// The whole configuration of a run: one typed section per component, read from JSON with command-line overrides.
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using Job;
using Oec;
using Rank.Model;
using Rank.Training;

namespace Rank.Configuration;

public sealed record RunOptions
{
    /// <summary>Directory for config.json, metrics.jsonl, coordinator.log, checkpoints/ and model.safetensors.
    /// Unset: runs/{UTC date-time} of the moment the configuration is loaded, so every run gets its own.</summary>
    public string? OutDir { get; init; }
}

/// <summary>Precedence: command line over file over defaults. Unknown keys and impossible values fail at start.</summary>
public sealed record RunConfig
{
    public ModelOptions Model { get; init; } = new();
    public OecOptions Oec { get; init; } = new();
    public DataOptions Data { get; init; } = new();
    public TrainOptions Train { get; init; } = new();
    public RunOptions Run { get; init; } = new();
    public JobOptions Job { get; init; } = new();
    public DivergenceOptions Divergence { get; init; } = new();

    public static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower, allowIntegerValues: false), new TextConverter() },
        WriteIndented = true,
    };

    /// <summary>
    /// Reads the optional JSON file, applies overrides of the form section.key=value (value parsed as JSON when it
    /// is a number, boolean or null, else taken as a string), validates every section and resolves the model preset.
    /// </summary>
    /// <param name="defaults">Settings (section.key=value) under the file: a command's own defaults (the sweep's CPU-sized run).</param>
    public static RunConfig Load(string? file, IEnumerable<string> overrides, IEnumerable<string>? defaults = null)
    {
        var root = Settings(file, overrides, defaults ?? []);

        RunConfig config;
        try { config = root.Deserialize<RunConfig>(Json) ?? new RunConfig(); }
        catch (JsonException e)
        {
            string key = (e.Path ?? "$").TrimStart('$', '.');
            if (e.Message.Contains("could not be mapped", StringComparison.Ordinal))
                throw new ArgumentException($"unknown setting '{key}' = {Describe(root, key)}: no such key in this section");
            throw new ArgumentException($"setting '{key}' = {Describe(root, key)}: {FirstSentence(e.Message)}");
        }
        config = config.Validated();
        // Printed and saved with the settings, but computed from them: a file copied from a run may hold them, and a
        // value other than the computed one would be ignored without a word.
        Computed(root, "data", "resolved_vocab_size", config.Data.ResolvedVocabSize, "data.vocab_size and data.source");
        Computed(root, "train", "overlaps", config.Train.Overlaps, "train.overlap_grad_reduce and train.device");
        Computed(root, "train", "checkpointing", config.Train.Checkpointing, "train.activation_checkpointing");
        return config;
    }

    static void Computed<T>(JsonObject root, string section, string key, T value, string from)
    {
        if (root[section] is not JsonObject given || !given.TryGetPropertyValue(key, out var node)) return;
        var computed = JsonSerializer.SerializeToNode(value, Json);
        if (!JsonNode.DeepEquals(node, computed))
            throw new ArgumentException($"{section}.{key} = {node?.ToJsonString() ?? "null"}: computed from {from} ({computed?.ToJsonString()} here), " +
                                        $"not a setting: remove it (a config.json copied from a run holds it), or set {from}");
    }

    /// <summary>The section.key names that the file and the overrides set (not the defaults): for a command that sets
    /// some keys itself and refuses them from the user.</summary>
    public static IReadOnlySet<string> GivenKeys(string? file, IEnumerable<string> overrides)
    {
        var keys = new SortedSet<string>(StringComparer.Ordinal);
        void Walk(JsonObject node, string prefix)
        {
            foreach (var (name, child) in node)
                if (child is JsonObject o) Walk(o, prefix + name + ".");
                else keys.Add(prefix + name);
        }
        Walk(Settings(file, overrides, []), "");
        return keys;
    }

    // Defaults, then the file merged over them key by key, then the overrides.
    static JsonObject Settings(string? file, IEnumerable<string> overrides, IEnumerable<string> defaults)
    {
        var root = new JsonObject();
        foreach (var d in defaults) Apply(root, d);
        if (file is not null)
        {
            if (!File.Exists(file)) throw new ArgumentException($"config file '{file}': not found");
            JsonObject given;
            string text = File.ReadAllText(file);
            try { given = JsonNode.Parse(text, documentOptions: Strict) as JsonObject ?? throw new ArgumentException($"config file '{file}': not a JSON object"); }
            catch (JsonException) when (FirstDuplicate(text) is { } key) { throw new ArgumentException($"config file '{file}': the key '{key}' is given more than once (which one holds?)"); }
            catch (JsonException e) { throw new ArgumentException($"config file '{file}': invalid JSON: {e.Message}"); }
            Merge(root, given);
        }
        foreach (var o in overrides) Apply(root, o);
        return root;
    }

    // A key given twice in one object is refused: JSON readers disagree on which value holds.
    static readonly JsonDocumentOptions Strict = new() { AllowDuplicateProperties = false };

    // The section.key of the first key given twice in one object of `text`, e.g. "train.steps"; null when there is none
    // before the text stops being JSON.
    static string? FirstDuplicate(string text)
    {
        var reader = new Utf8JsonReader(System.Text.Encoding.UTF8.GetBytes(text));
        var objects = new Stack<(string Name, HashSet<string> Keys)>();
        string name = "";
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.StartObject) objects.Push((name, []));
                else if (reader.TokenType == JsonTokenType.EndObject) objects.Pop();
                else if (reader.TokenType == JsonTokenType.PropertyName && !objects.Peek().Keys.Add(name = reader.GetString()!))
                    return string.Join(".", objects.Reverse().Skip(1).Select(o => o.Name).Append(name));
            }
        }
        catch (JsonException) { }
        return null;
    }

    static void Merge(JsonObject into, JsonObject from)
    {
        foreach (var (name, value) in from.ToList())
        {
            if (value is JsonObject o && into[name] is JsonObject existing) Merge(existing, o);
            else into[name] = value?.DeepClone();
        }
    }

    /// <summary>Every section checked and the model preset filled in; throws naming the key and the value.</summary>
    public RunConfig Validated()
    {
        Oec.Validate();
        Data.Validate();
        Train.Validate();
        Job.Validate();
        Divergence.Validate();
        if (Job.Backend == Backend.Nccl && Train.Device != "cuda") // NCCL reduces CUDA tensors in place
            throw new ArgumentException($"job.backend = nccl with train.device = {Train.Device}: NCCL needs the model on GPUs; set train.device=cuda, or job.backend=tcp for CPU ranks");
        if (Run.OutDir is not null && string.IsNullOrWhiteSpace(Run.OutDir)) throw new ArgumentException("run.out_dir = (empty): must be a directory path");
        return this with { Model = Model.Resolve(), Run = Run with { OutDir = Run.OutDir ?? $"runs/{DateTime.UtcNow:yyyyMMdd-HHmmss}" } };
    }

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>A configuration as ToJson wrote it (the coordinator hands it to the ranks), validated.</summary>
    public static RunConfig FromJson(string json)
    {
        try { return (JsonSerializer.Deserialize<RunConfig>(json, Json) ?? throw new ArgumentException("configuration: empty JSON")).Validated(); }
        catch (JsonException e) { throw new ArgumentException($"configuration from the coordinator: {e.Message}"); }
    }

    /// <summary>Why this run cannot continue a checkpoint saved with <paramref name="checkpointConfigJson"/> (ToJson's
    /// text, from its manifest): its model or data section differs, or what orders the data (the global batch,
    /// train.batch_size x train.grad_accum; train.seed, which shuffles it; train.sequence_length, which cuts it): the checkpoint's data cursor counts the
    /// sequences read in that order, so another one would read some twice and skip others. Names the setting and both
    /// values; null when they agree. The rest (steps, learning rate, world size, ZeRO stage) may change on resume.</summary>
    public string? ResumeConflict(string checkpointConfigJson)
    {
        RunConfig saved;
        try { saved = JsonSerializer.Deserialize<RunConfig>(checkpointConfigJson, Json) ?? new RunConfig(); }
        catch (JsonException e) { return $"its configuration cannot be read: {e.Message}"; }
        long savedBatch = (long)saved.Train.BatchSize * saved.Train.GradAccum, batch = (long)Train.BatchSize * Train.GradAccum;
        return saved.Model != Model ? Differs("model", saved.Model, Model)
            : saved.Data != Data ? Differs("data", saved.Data, Data)
            : savedBatch != batch ? $"its global batch, train.batch_size x train.grad_accum = {saved.Train.BatchSize} x {saved.Train.GradAccum} = {savedBatch} " +
                                    $"sequences, differs from this run's {Train.BatchSize} x {Train.GradAccum} = {batch}"
            : saved.Train.Seed != Train.Seed ? $"its train.seed = {saved.Train.Seed}, which orders the data, differs from this run's {Train.Seed}"
            : saved.Train.SequenceLength != Train.SequenceLength
                ? $"its train.sequence_length = {saved.Train.SequenceLength}, which cuts the data into sequences, differs from this run's {Train.SequenceLength}"
            : null;
    }

    static string Differs<T>(string section, T saved, T now) =>
        $"its {section} section {JsonSerializer.Serialize(saved, Compact)} differs from this run's {JsonSerializer.Serialize(now, Compact)}";

    static readonly JsonSerializerOptions Compact = new(Json) { WriteIndented = false };

    /// <summary>A string setting also takes a number or boolean as its text (run.out_dir=2024 from the command line).</summary>
    sealed class TextConverter : JsonConverter<string>
    {
        public override string? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
        {
            JsonTokenType.String => reader.GetString(),
            JsonTokenType.Number or JsonTokenType.True or JsonTokenType.False => System.Text.Encoding.UTF8.GetString(reader.ValueSpan),
            _ => throw new JsonException($"expected text, got {reader.TokenType}"),
        };

        public override void Write(Utf8JsonWriter writer, string value, JsonSerializerOptions options) => writer.WriteStringValue(value);
    }

    static void Apply(JsonObject root, string assignment)
    {
        int eq = assignment.IndexOf('=');
        if (eq <= 0) throw new ArgumentException($"override '{assignment}': expected section.key=value, e.g. train.learning_rate=1e-3");
        string[] path = assignment[..eq].Split('.');
        string text = assignment[(eq + 1)..];
        JsonObject node = root;
        foreach (var part in path[..^1])
        {
            if (node[part] is not JsonObject child)
            {
                child = new JsonObject();
                node[part] = child;
            }
            node = child;
        }
        node[path[^1]] = ParseValue(text);
    }

    static JsonNode? ParseValue(string text)
    {
        try
        {
            var parsed = JsonNode.Parse(text);
            if (parsed is JsonValue) return parsed;
        }
        catch (JsonException) { }
        return JsonValue.Create(text);
    }

    static string Describe(JsonObject root, string key)
    {
        JsonNode? node = root;
        foreach (var part in key.Split('.', StringSplitOptions.RemoveEmptyEntries))
            node = node is JsonObject o && o.TryGetPropertyValue(part, out var child) ? child : null;
        return node?.ToJsonString() ?? "(absent)";
    }

    static string FirstSentence(string message)
    {
        int cut = message.IndexOf(". Path:", StringComparison.Ordinal);
        message = cut > 0 ? message[..cut] : message;
        foreach (var choices in new[] { typeof(OecMethod), typeof(DivergenceAction), typeof(Precision), typeof(Backend) })
            if (message.EndsWith(choices.FullName!, StringComparison.Ordinal))
                return "expected one of " + string.Join(", ", Enum.GetNames(choices).Select(JsonNamingPolicy.SnakeCaseLower.ConvertName));
        return message;
    }
}
