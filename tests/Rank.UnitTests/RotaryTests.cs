using Rank.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class RotaryTests
{
    const int HeadDim = 16, T = 6;

    static (double[] Input, double[] Output) ApplyToRandom(int seed)
    {
        var random = new Random(seed);
        var input = Enumerable.Range(0, 2 * T * HeadDim).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        using var rotary = new Rotary(HeadDim, maxSequenceLength: 32);
        using var x = tensor(input).view(1, 2, T, HeadDim); // [B, nh, T, hs]
        using var y = rotary.Apply(x);
        Assert.Equal(new long[] { 1, 2, T, HeadDim }, y.shape);
        return (input.Select(v => (double)v).ToArray(), Tensors.Values(y));
    }

    [Fact]
    public void The_first_half_of_each_head_turns_in_interleaved_pairs_by_position_times_frequency()
    {
        var (x, y) = ApplyToRandom(1);

        // Pair j = dims (2j, 2j + 1) of the first hs/2 dims turns by angle pos * 10000^(-2j / (hs/2)).
        for (int head = 0; head < 2; head++)
            for (int pos = 0; pos < T; pos++)
            {
                int row = (head * T + pos) * HeadDim;
                for (int j = 0; j < HeadDim / 4; j++)
                {
                    double angle = pos * Math.Pow(10000, -2.0 * j / (HeadDim / 2));
                    double x1 = x[row + 2 * j], x2 = x[row + 2 * j + 1];
                    Assert.Equal(x1 * Math.Cos(angle) - x2 * Math.Sin(angle), y[row + 2 * j], 5);
                    Assert.Equal(x2 * Math.Cos(angle) + x1 * Math.Sin(angle), y[row + 2 * j + 1], 5);
                }
            }
    }

    [Fact]
    public void The_second_half_of_each_head_passes_through_unchanged()
    {
        var (x, y) = ApplyToRandom(2);

        for (int row = 0; row < 2 * T; row++)
            for (int dim = HeadDim / 2; dim < HeadDim; dim++)
                Assert.Equal(x[row * HeadDim + dim], y[row * HeadDim + dim]);
    }

    [Fact]
    public void Position_zero_is_not_rotated()
    {
        var (x, y) = ApplyToRandom(3);

        for (int dim = 0; dim < HeadDim; dim++) Assert.Equal(x[dim], y[dim], 6);
    }

    [Fact]
    public void The_tables_move_to_the_inputs_device_and_dtype_once_not_at_every_call()
    {
        using var rotary = new Rotary(HeadDim, maxSequenceLength: 32);
        using var x = randn(1, 2, T, HeadDim, dtype: ScalarType.Float64);
        using var y = rotary.Apply(x);
        var moved = rotary.Cos;
        Assert.Equal(ScalarType.Float64, moved.dtype);
        using var again = rotary.Apply(x);
        Assert.Same(moved, rotary.Cos); // Module.to() does not move them, so Apply does, once: no copy per call

        using var x32 = x.to_type(ScalarType.Float32);
        using var y32 = rotary.Apply(x32); // back from float64, converted from the fp32 tables: the fp32 result
        Assert.Equal(ScalarType.Float32, rotary.Cos.dtype);
        Assert.True(y32.allclose(y.to_type(ScalarType.Float32), rtol: 1e-6, atol: 1e-6));
    }

    /// <summary>A module holding a Rotary as attention does: RegisterComponents of the parent also registers the
    /// Rotary's tensor fields, which is how a moved model once left Apply with disposed tables.</summary>
    sealed class Holder : TorchSharp.torch.nn.Module
    {
        public readonly Rotary rotary = new(HeadDim, maxSequenceLength: 32);
        public Holder() : base("holder") => RegisterComponents();
    }

    /// <summary>The GPU path on a machine without one: the meta device (shapes, no data) takes Module.to's path for
    /// CUDA, and an op that mixes a meta tensor with one left on the CPU throws, as with a GPU.</summary>
    [Fact]
    public void After_the_model_moves_to_another_device_Apply_runs_there_and_the_tables_stay_out_of_the_state_dict()
    {
        using var holder = new Holder();
        var meta = new Device(DeviceType.META);

        holder.to(meta);
        using var x = randn(1, 2, T, HeadDim, device: meta); // [B, nh, T, hs]
        using var y = holder.rotary.Apply(x);

        Assert.Equal(DeviceType.META, y.device_type);
        Assert.Equal(new long[] { 1, 2, T, HeadDim }, y.shape);
        Assert.Equal(DeviceType.META, holder.rotary.Cos.device_type);
        Assert.Empty(holder.state_dict()); // fixed tables, not a checkpoint's business
    }
}
