// Options of the GPT: size (named presets or explicit), vocabulary padding, weight tying.
namespace Rank.Model;

public sealed record ModelOptions
{
    /// <summary>Named size: tiny, small (CPU), the paper's 16M, 29M, 57M, 109M, 221M, or GPT-3's shapes gpt3-125M,
    /// gpt3-350M, gpt3-760M, gpt3-1.3B, gpt3-2.7B (named after GPT-3's counts, not this model's). Explicit fields override it.</summary>
    public string Preset { get; init; } = "tiny";
    public int? NLayer { get; init; }
    public int? NHead { get; init; }
    public int? DModel { get; init; }
    /// <summary>Input and output embeddings share one matrix; centering and mu-loss then act on it.</summary>
    public bool WeightTying { get; init; }
    /// <summary>The vocabulary is padded up to a multiple of this (GPT-2's 50257 -> 50304 with 64).</summary>
    public int VocabMultiple { get; init; } = 64;

    // (layers, d_model, heads); the paper's sizes all use 4 heads. GPT-3's shapes are those of Brown et al. 2020, table
    // 2.1; with SwiGLU and untied embeddings this model's counts differ from GPT-3's (README, "Model presets").
    static readonly Dictionary<string, (int Layers, int Dim, int Heads)> Presets = new(StringComparer.OrdinalIgnoreCase)
    {
        ["tiny"] = (2, 64, 4),
        ["small"] = (4, 128, 4),
        ["16M"] = (6, 224, 4),
        ["29M"] = (9, 320, 4),
        ["57M"] = (12, 480, 4),
        ["109M"] = (15, 640, 4),
        ["221M"] = (21, 832, 4),
        ["gpt3-125M"] = (12, 768, 12),
        ["gpt3-350M"] = (24, 1024, 16),
        ["gpt3-760M"] = (24, 1536, 16),
        ["gpt3-1.3B"] = (24, 2048, 16),
        ["gpt3-2.7B"] = (32, 2560, 32),
    };

    public static IReadOnlyCollection<string> PresetNames => Presets.Keys;

    /// <summary>The preset filled in and checked: every field explicit.</summary>
    public ModelOptions Resolve()
    {
        if (!Presets.TryGetValue(Preset, out var p))
            throw new ArgumentException($"model.preset = '{Preset}': unknown, expected one of {string.Join(", ", Presets.Keys)}");
        var resolved = this with { NLayer = NLayer ?? p.Layers, DModel = DModel ?? p.Dim, NHead = NHead ?? p.Heads };
        if (resolved.NLayer < 1) throw new ArgumentException($"model.n_layer = {resolved.NLayer}: must be >= 1");
        if (resolved.NHead < 1) throw new ArgumentException($"model.n_head = {resolved.NHead}: must be >= 1");
        if (resolved.DModel < 1 || resolved.DModel % resolved.NHead != 0 || resolved.DModel / resolved.NHead % 4 != 0)
            throw new ArgumentException($"model.d_model = {resolved.DModel}: must be a positive multiple of 4 * n_head ({4 * resolved.NHead}) " +
                                        "so that rotary embedding can rotate half of each head's dimensions in pairs");
        if (VocabMultiple < 1) throw new ArgumentException($"model.vocab_multiple = {VocabMultiple}: must be >= 1");
        return resolved;
    }

    /// <summary>The vocabulary rounded up to <see cref="VocabMultiple"/>: the rows of the embeddings (V in mu).</summary>
    public int PaddedVocab(int vocabSize) => (vocabSize + VocabMultiple - 1) / VocabMultiple * VocabMultiple;
}
