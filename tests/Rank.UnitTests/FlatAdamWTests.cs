// FlatAdamW against TorchSharp's AdamW: the same bits step after step; its state through a save and a load.
using Rank.Model;
using Rank.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class FlatAdamWTests
{
    static Gpt Model()
    {
        manual_seed(7);
        return new Gpt(new ModelOptions(), 512, maxSequenceLength: 16);
    }

    // A real gradient: the mean of the last hidden state's squares over a fixed batch, plus a term on the head.
    static void Backward(Gpt model, int step)
    {
        using var scope = NewDisposeScope();
        manual_seed(100 + step);
        var idx = randint(0, 512, [2, 16]);
        var loss = model.forward(idx).square().mean() + model.OutputEmbedding.sum() * 1e-3;
        loss.backward();
    }

    static (List<Parameter> Decayed, List<Parameter> Plain) Groups(Gpt model) =>
        (model.parameters().Where(p => p.dim() >= 2).ToList(), model.parameters().Where(p => p.dim() < 2).ToList());

    /// <summary>Two copies of one model: one under TorchSharp's AdamW, one under FlatAdamW, both with weight decay 0.1
    /// on matrices and none on the rest, as the trainer groups them.</summary>
    sealed class Pair : IDisposable
    {
        public readonly Gpt Reference = Model(), Flat = Model();
        public readonly AdamW TorchSharp;
        public readonly FlatAdamW Ours;

        public Pair(double lr)
        {
            var (rd, rp) = Groups(Reference);
            var (fd, fp) = Groups(Flat);
            TorchSharp = optim.AdamW([new AdamW.ParamGroup(rd, lr, 0.9, 0.95, 1e-8, 0.1, false, false), new AdamW.ParamGroup(rp, lr, 0.9, 0.95, 1e-8, 0, false, false)],
                                     lr, 0.9, 0.95, 1e-8, 0.1);
            Ours = new FlatAdamW([(fd, 0.1), (fp, 0)], 0.9, 0.95, 1e-8);
        }

        public void Dispose()
        {
            TorchSharp.Dispose();
            Ours.Dispose();
            Reference.Dispose();
            Flat.Dispose();
        }
    }

    [Fact]
    public void With_weight_decay_and_clipping_the_gradients_are_clipped_alike_and_the_steps_give_the_bits_of_TorchSharps_AdamW()
    {
        using var pair = new Pair(3e-3);
        var (reference, flat, adamw, ours) = (pair.Reference, pair.Flat, pair.TorchSharp, pair.Ours);

        for (int step = 0; step < 5; step++)
        {
            double lr = 3e-3 * (step + 1) / 5;
            foreach (var g in adamw.ParamGroups) g.LearningRate = lr;
            Backward(reference, step);
            Backward(flat, step);
            double expectedNorm = nn.utils.clip_grad_norm_(reference.parameters(), 0.05);
            double norm = ours.ClipGradNorm(0.05);

            Assert.True(expectedNorm > 0.05, "the gradient was not clipped: the test would not see clipping");
            Assert.Equal(expectedNorm, norm, 1e-5 * expectedNorm); // the same norm, summed in another order
            foreach (var (r, f) in reference.parameters().Zip(flat.parameters()))
            {
                double scale = r.grad!.abs().max().item<float>();
                // The norm is summed in another order (per group, not per parameter): the coefficient agrees to about 1e-6.
                Assert.True((r.grad! - f.grad!).abs().max().item<float>() <= 1e-5 * scale, $"step {step}: a clipped gradient differs beyond rounding");
                using (no_grad()) f.grad!.copy_(r.grad!); // the same gradients from here, so the steps can be compared bit for bit
            }
            adamw.step();
            adamw.zero_grad();
            ours.Step(lr);
            ours.ZeroGrad();
            Assert.Equal(0, Tensors.MaxParameterDifference(reference, flat));
        }
        Assert.All(flat.parameters(), p => Assert.Equal(0, p.grad!.abs().max().item<float>()));
    }

    [Fact]
    public void Without_clipping_the_steps_are_bit_for_bit_TorchSharps_and_the_parameters_live_in_the_flat_buffer()
    {
        using var pair = new Pair(1e-2);
        var (reference, flat, adamw, ours) = (pair.Reference, pair.Flat, pair.TorchSharp, pair.Ours);

        for (int step = 0; step < 5; step++)
        {
            Backward(reference, step);
            Backward(flat, step);
            adamw.step();
            adamw.zero_grad();
            ours.Step(1e-2);
            ours.ZeroGrad();
            Assert.Equal(0, Tensors.MaxParameterDifference(reference, flat));
        }
        // A write through a parameter is a write into the optimizer's buffer: what its state view and step see.
        using (no_grad()) flat.OutputEmbedding.fill_(0.5);
        Assert.Equal(5, ours.Steps);
        Assert.Equal(0.5f, flat.named_parameters().Single(n => n.name == "lm_head").parameter.max().item<float>());
    }

    [Fact]
    public void Saved_and_loaded_into_a_fresh_optimizer_the_state_continues_the_same_steps()
    {
        using var a = Model();
        using var b = Model();
        var (ad, ap) = Groups(a);
        var (bd, bp) = Groups(b);
        using var first = new FlatAdamW([(ad, 0.1), (ap, 0)], 0.9, 0.95, 1e-8);
        using var second = new FlatAdamW([(bd, 0.1), (bp, 0)], 0.9, 0.95, 1e-8);
        for (int step = 0; step < 3; step++)
        {
            Backward(a, step);
            first.Step(1e-2);
            first.ZeroGrad();
        }
        using (no_grad())
            foreach (var (pa, pb) in a.parameters().Zip(b.parameters())) pb.copy_(pa);

        using var temp = new TempDirectory();
        string path = Path.Combine(temp.Path, "optimizer.safetensors");
        first.Save(path, a.named_parameters());
        second.Load([path], b.named_parameters());
        Backward(a, 3);
        Backward(b, 3);
        first.Step(1e-2);
        second.Step(1e-2);

        Assert.Equal(3 + 1, second.Steps);
        Assert.Equal(0, Tensors.MaxParameterDifference(a, b));
    }

    [Fact]
    public void State_of_another_shape_is_refused_naming_the_file_and_the_parameter()
    {
        using var a = Model();
        using var other = new Gpt(new ModelOptions { Preset = "small" }, 512, maxSequenceLength: 16);
        using var ours = new FlatAdamW([(a.parameters().ToList(), 0)], 0.9, 0.95, 1e-8);
        using var theirs = new FlatAdamW([(other.parameters().ToList(), 0)], 0.9, 0.95, 1e-8);
        using var temp = new TempDirectory();
        string path = Path.Combine(temp.Path, "optimizer.safetensors");
        theirs.Save(path, other.named_parameters());

        var e = Assert.Throws<InvalidDataException>(() => ours.Load([path], a.named_parameters()));

        Assert.Contains(path, e.Message);
        Assert.Matches(@"\S+ has \d+ elements, this model.s has \d+", e.Message);
    }

    [Fact]
    public void State_missing_elements_is_refused_naming_the_parameter()
    {
        using var a = Model();
        using var ours = new FlatAdamW([(a.parameters().ToList(), 0)], 0.9, 0.95, 1e-8);
        using var temp = new TempDirectory();
        string path = Path.Combine(temp.Path, "optimizer.zero0of2.safetensors");
        var named = a.named_parameters().ToList();
        using (var half = zeros(10))
            OptimizerCheckpoint.Write(path, 3, named.Select(n => new MomentChunk(n.name, n.parameter.numel(), 0, half, half)));

        var e = Assert.Throws<InvalidDataException>(() => ours.Load([path], named));

        Assert.Contains("covers 10 of elements [0, ", e.Message);
    }
}
