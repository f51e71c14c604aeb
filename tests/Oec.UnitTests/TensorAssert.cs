// Helpers shared by the tests: read tensors back as doubles and compare them with tolerances.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

internal static class TensorAssert
{
    /// <summary>The elements of <paramref name="t"/>, row-major, as doubles.</summary>
    public static double[] Values(Tensor t) =>
        t.detach().cpu().to_type(ScalarType.Float64).contiguous().data<double>().ToArray();

    public static double Scalar(Tensor t) => t.detach().cpu().to_type(ScalarType.Float64).item<double>();

    /// <summary>|actual - expected| &lt;= atol + rtol * |expected|, for each element.</summary>
    public static void Close(double expected, double actual, double rtol = 1e-6, double atol = 1e-9, string? what = null)
    {
        double bound = atol + rtol * Math.Abs(expected);
        Assert.True(Math.Abs(actual - expected) <= bound,
            $"{what ?? "value"}: expected {expected:R}, got {actual:R} (|diff| {Math.Abs(actual - expected):R} > {bound:R})");
    }

    public static void Close(IReadOnlyList<double> expected, IReadOnlyList<double> actual, double rtol = 1e-6, double atol = 1e-9)
    {
        Assert.Equal(expected.Count, actual.Count);
        for (int i = 0; i < expected.Count; i++) Close(expected[i], actual[i], rtol, atol, $"element {i}");
    }

    public static void AllClose(Tensor expected, Tensor actual, double rtol = 1e-6, double atol = 1e-9)
    {
        Assert.Equal(expected.shape, actual.shape);
        Close(Values(expected), Values(actual), rtol, atol);
    }
}
