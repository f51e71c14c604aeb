using Rank.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class GptTests
{
    const int Gpt2Vocab = 50257;

    static Gpt Paper16M(bool tying, long seed = 1)
    {
        manual_seed(seed);
        return new Gpt(new ModelOptions { Preset = "16M", WeightTying = tying }, Gpt2Vocab, maxSequenceLength: 64);
    }

    static Gpt Tiny(long seed = 1, bool tying = false)
    {
        manual_seed(seed);
        return new Gpt(new ModelOptions { WeightTying = tying }, 512, maxSequenceLength: 32);
    }

    static Dictionary<string, long[]> Shapes(Gpt model) => model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);

    static Tensor Parameter(Gpt model, string name) => model.named_parameters().Single(p => p.name == name).parameter;

    static long Count(Gpt model) => model.parameters().Sum(p => p.numel());

    static void StdNear(double expected, Tensor t, string what)
    {
        var (mean, std) = Tensors.Moments(t);
        Assert.True(Math.Abs(std - expected) <= 0.05 * expected, $"{what}: std {std:G4}, expected {expected:G4} within 5%");
        Assert.True(Math.Abs(mean) <= 0.05 * expected, $"{what}: mean {mean:G4}, expected about 0 (std {expected:G4})");
    }

    static long[] TokenIds(int seed, int count, int vocab)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (long)random.Next(vocab)).ToArray();
    }

    static Tensor Tokens(int seed, int batch, int length, int vocab) => tensor(TokenIds(seed, batch * length, vocab)).view(batch, length);

    /// <summary>The trainer moves the model to its GPU with Module.to, which replaces the parameter objects; the field
    /// behind OutputEmbedding must follow, or the head would stay behind. A dtype move takes the same path on the CPU.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void After_the_model_is_moved_the_output_embedding_is_the_moved_parameter(bool tying)
    {
        using var model = Tiny(tying: tying);

        model.to(ScalarType.Float64); // may replace (and dispose) parameter objects: the trainer moves before the optimizer exists

        Assert.Equal(ScalarType.Float64, model.OutputEmbedding.dtype);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.Float64, p.dtype));
        // The head is the registered parameter (a write through it is seen by the module), not a stale copy.
        using (no_grad()) model.OutputEmbedding.fill_(0.25);
        Assert.All(Tensors.Values(Parameter(model, tying ? "wte.weight" : "lm_head")), v => Assert.Equal(0.25, v));
    }

    [Fact]
    public void The_GPT2_vocabulary_is_padded_to_50304()
    {
        Assert.Equal(50304, new ModelOptions().PaddedVocab(Gpt2Vocab));
        Assert.Equal(512, new ModelOptions().PaddedVocab(512));
        Assert.Equal(576, new ModelOptions().PaddedVocab(513));
    }

    [Theory]
    [InlineData(64)]
    [InlineData(224)]
    [InlineData(320)]
    [InlineData(480)]
    [InlineData(640)]
    [InlineData(832)]
    public void The_SwiGLU_hidden_size_is_256_times_the_ceiling_of_8d_over_3_over_256(int d)
    {
        Assert.Equal(256 * (int)Math.Ceiling(8.0 * d / 3 / 256), SwiGlu.HiddenSize(d));
    }

    [Fact]
    public void The_16M_preset_has_the_papers_parameter_shapes_and_no_biases()
    {
        using var model = Paper16M(tying: false);
        var expected = new Dictionary<string, long[]>
        {
            ["wte.weight"] = [50304, 224],
            ["ln_f.weight"] = [224],
            ["lm_head"] = [50304, 224],
        };
        for (int l = 0; l < 6; l++)
        {
            expected[$"h.{l}.ln_1.weight"] = [224];
            expected[$"h.{l}.attn.c_attn.weight"] = [3 * 224, 224];
            expected[$"h.{l}.attn.c_proj.weight"] = [224, 224];
            expected[$"h.{l}.attn.q_layernorm.weight"] = [224 / 4];
            expected[$"h.{l}.attn.k_layernorm.weight"] = [224 / 4];
            expected[$"h.{l}.ln_2.weight"] = [224];
            expected[$"h.{l}.mlp.W.weight"] = [768, 224];
            expected[$"h.{l}.mlp.V.weight"] = [768, 224];
            expected[$"h.{l}.mlp.W_2.weight"] = [224, 768];
        }

        var shapes = Shapes(model);

        Assert.Equal(50304, model.VocabSize);
        Assert.Equal(224, model.Dim);
        Assert.Equal(expected.Keys.Order(), shapes.Keys.Order());
        foreach (var (name, shape) in expected) Assert.True(shape.SequenceEqual(shapes[name]), $"{name}: [{string.Join(", ", shapes[name])}]");
        Assert.DoesNotContain(shapes.Keys, name => name.Contains("bias"));
        Assert.Equal(new long[] { 50304, 224 }, model.OutputEmbedding.shape);
    }

    [Fact]
    public void The_16M_preset_has_26_840_576_parameters_untied()
    {
        using var model = Paper16M(tying: false);

        // input embedding and head; per layer ln_1, c_attn, c_proj, q and k layernorm, ln_2, SwiGLU W, V and W_2; ln_f
        Assert.Equal(2L * 50304 * 224 + 6L * (224 + 672 * 224 + 224 * 224 + 2 * 56 + 224 + 3 * 768 * 224) + 224, Count(model));
        Assert.Equal(26_840_576, Count(model));
    }

    [Fact]
    public void Weight_tying_removes_the_head_matrix_from_the_parameters()
    {
        using var untied = Paper16M(tying: false);
        using var tied = Paper16M(tying: true);

        Assert.Equal(Count(untied) - 50304L * 224, Count(tied));
        Assert.DoesNotContain("lm_head", Shapes(tied).Keys);
        Assert.Equal(new long[] { 50304, 224 }, tied.OutputEmbedding.shape);
    }

    [Fact]
    public void With_weight_tying_the_output_embedding_is_the_input_embedding_tensor()
    {
        using var model = Tiny(tying: true);

        using (no_grad()) model.OutputEmbedding.fill_(0.25);

        Assert.All(Tensors.Values(Parameter(model, "wte.weight")), v => Assert.Equal(0.25, v));
        // The forward pass reads the same matrix: with every row equal, tokens 3 and 7 give the same hidden state.
        using (no_grad())
        {
            using var hidden = model.forward(tensor(new long[] { 3, 7 }).view(2, 1));
            var h = Tensors.Values(hidden);
            Assert.Equal(h[..64], h[64..]);
        }
    }

    [Fact]
    public void Without_weight_tying_the_output_embedding_is_a_separate_tensor()
    {
        using var model = Tiny(tying: false);
        var before = Tensors.Values(Parameter(model, "wte.weight"));

        using (no_grad()) model.OutputEmbedding.fill_(0.25);

        Assert.Equal(before, Tensors.Values(Parameter(model, "wte.weight")));
        Assert.All(Tensors.Values(Parameter(model, "lm_head")), v => Assert.Equal(0.25, v));
    }

    [Fact]
    public void Initialisation_follows_the_paper_untied()
    {
        using var model = Paper16M(tying: false);
        const double d = 224, layers = 6, vocab = 50304;

        StdNear(1 / Math.Sqrt(d), Parameter(model, "wte.weight"), "wte");
        StdNear(Math.Sqrt(2 / (vocab + d)), Parameter(model, "lm_head"), "lm_head (xavier)");
        for (int l = 0; l < 6; l++)
        {
            StdNear(0.02 / Math.Sqrt(2 * layers), Parameter(model, $"h.{l}.attn.c_proj.weight"), $"h.{l}.attn.c_proj");
            StdNear(Math.Sqrt(2 / (d + 3 * d)), Parameter(model, $"h.{l}.attn.c_attn.weight"), $"h.{l}.attn.c_attn (xavier)");
            StdNear(Math.Sqrt(2 / (d + 768)), Parameter(model, $"h.{l}.mlp.W.weight"), $"h.{l}.mlp.W (xavier)");
            StdNear(Math.Sqrt(2 / (d + 768)), Parameter(model, $"h.{l}.mlp.W_2.weight"), $"h.{l}.mlp.W_2 (xavier)");
        }
        foreach (var (name, p) in model.named_parameters().Where(p => p.name.EndsWith("norm.weight") || p.name.Contains("ln_")))
            Assert.All(Tensors.Values(p), v => Assert.Equal(1.0, v));
    }

    [Fact]
    public void With_weight_tying_the_shared_matrix_is_initialised_as_the_head()
    {
        using var model = Paper16M(tying: true);

        StdNear(Math.Sqrt(2 / (50304.0 + 224)), Parameter(model, "wte.weight"), "tied wte (xavier, as the head)");
    }

    [Fact]
    public void The_output_is_batch_by_time_by_d_model()
    {
        using var model = Tiny();
        using var _ = no_grad();

        using var hidden = model.forward(Tokens(2, batch: 3, length: 20, vocab: 512));

        Assert.Equal(new long[] { 3, 20, 64 }, hidden.shape);
        Assert.All(Tensors.Values(hidden), v => Assert.True(double.IsFinite(v)));
    }

    [Fact]
    public void Changing_later_tokens_leaves_earlier_hidden_states_unchanged()
    {
        using var model = Tiny();
        using var _ = no_grad();
        const int T = 24, t = 9;
        long[] ids = TokenIds(3, 2 * T, 512);
        long[] other = (long[])ids.Clone();
        for (int row = 0; row < 2; row++)
            for (int pos = t + 1; pos < T; pos++) other[row * T + pos] = (ids[row * T + pos] + 1 + pos) % 512;
        using var original = tensor(ids).view(2, T);
        using var changed = tensor(other).view(2, T);

        using var a = model.forward(original);
        using var b = model.forward(changed);

        var earlyA = Tensors.Values(a[.., ..(t + 1)]);
        var earlyB = Tensors.Values(b[.., ..(t + 1)]);
        double early = earlyA.Zip(earlyB, (x, y) => Math.Abs(x - y)).Max();
        double late = Tensors.Values(a[.., (t + 1)..]).Zip(Tensors.Values(b[.., (t + 1)..]), (x, y) => Math.Abs(x - y)).Max();
        Assert.True(early <= 1e-5, $"positions <= {t} moved by {early}");
        Assert.True(late > 1e-2, $"positions > {t} moved only by {late}: the later tokens had no effect");
    }

    [Fact]
    public void The_same_seed_gives_identical_parameters()
    {
        using var a = Tiny(seed: 5);
        using var b = Tiny(seed: 5);
        using var c = Tiny(seed: 6);

        Assert.Equal(0, Tensors.MaxParameterDifference(a, b));
        Assert.True(Tensors.MaxParameterDifference(a, c) > 0);
    }
}
