using Rank.Model;
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
}
