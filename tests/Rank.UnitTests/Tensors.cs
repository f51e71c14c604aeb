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

    /// <summary>||mu||: the norm of the mean row of E [V, d].</summary>
    public static double MuNorm(Tensor embedding)
    {
        using var noGrad = no_grad();
        using var mu = embedding.detach().to_type(ScalarType.Float64).mean([0L]);
        return mu.norm().item<double>();
    }
}
