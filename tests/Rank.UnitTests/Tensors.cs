// Reading tensors and modules back as doubles for assertions.
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.UnitTests;

internal static class Tensors
{
    /// <summary>The elements of <paramref name="t"/>, row-major, as doubles.</summary>
    public static double[] Values(Tensor t)
    {
        using var d = t.detach().cpu().to_type(ScalarType.Float64).contiguous();
        return d.data<double>().ToArray();
    }

    /// <summary>Mean and (population) standard deviation of all elements.</summary>
    public static (double Mean, double Std) Moments(Tensor t)
    {
        var v = Values(t);
        double mean = v.Average();
        return (mean, Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / v.Length));
    }

    /// <summary>Every parameter by name, as doubles.</summary>
    public static Dictionary<string, double[]> Parameters(nn.Module model) =>
        model.named_parameters().ToDictionary(p => p.name, p => Values(p.parameter));

    /// <summary>The largest |a - b| over all parameters of two models with the same names and shapes.</summary>
    public static double MaxParameterDifference(nn.Module a, nn.Module b)
    {
        var pa = Parameters(a);
        var pb = Parameters(b);
        Assert.Equal(pa.Keys.Order(), pb.Keys.Order());
        double max = 0;
        foreach (var (name, values) in pa)
        {
            Assert.Equal(values.Length, pb[name].Length);
            for (int i = 0; i < values.Length; i++) max = Math.Max(max, Math.Abs(values[i] - pb[name][i]));
        }
        return max;
    }

    /// <summary>
    /// Asserts a run within float rounding of its one-process reference: the largest loss difference
    /// <paramref name="lossError"/> under 1e-5, and the parameters (same names and lengths) within 1e-3 everywhere and
    /// within 1e-5 for 99.9% of the elements. AdamW moves an element by lr g / (|g| + eps): where |g| is of the order
    /// of eps (1e-8), float rounding of g is amplified (seen: one embedding element drifting 2e-5 a step), so a few
    /// elements part more. Logs the figures through <paramref name="log"/>, prefixed by <paramref name="what"/>.
    /// </summary>
    public static void AssertWithinRounding(Dictionary<string, double[]> expected, Dictionary<string, double[]> actual, double lossError,
                                            string what, Action<string> log)
    {
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        Assert.All(expected, kv => Assert.Equal(kv.Value.Length, actual[kv.Key].Length));
        var differences = expected.SelectMany(kv => kv.Value.Zip(actual[kv.Key], (a, b) => Math.Abs(a - b))).Order().ToArray();
        double largest = differences[^1], p999 = differences[(int)(0.999 * (differences.Length - 1))];
        log($"{what}: largest loss difference {lossError:G3}; parameter difference largest {largest:G3}, 99.9th percentile {p999:G3}");
        Assert.True(lossError < 1e-5, $"{what}: the losses differ from the reference by up to {lossError}");
        Assert.True(largest < 1e-3, $"{what}: the parameters differ from the reference by up to {largest}");
        Assert.True(p999 < 1e-5, $"{what}: 0.1% of the parameters differ from the reference by more than {p999}");
    }

    /// <summary>||mu||: the norm of the mean row of E [V, d].</summary>
    public static double MuNorm(Tensor embedding)
    {
        using var noGrad = no_grad();
        using var mu = embedding.detach().to_type(ScalarType.Float64).mean([0L]);
        return mu.norm().item<double>();
    }
}
