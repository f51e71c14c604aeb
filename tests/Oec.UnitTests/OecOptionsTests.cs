namespace Oec.UnitTests;

public class OecOptionsTests
{
    [Fact]
    public void The_defaults_are_the_published_ones_and_are_valid()
    {
        var options = new OecOptions();

        Assert.Equal(OecMethod.MuCentering, options.Method);
        Assert.Equal(1e-4, options.MuLossLambda);
        Assert.Equal(1e-4, options.ZLossLambda);
        Assert.Equal(30.0, options.SoftCap);
        options.Validate(); // does not throw
    }

    [Theory]
    [MemberData(nameof(MethodData.All), MemberType = typeof(MethodData))]
    public void Every_method_with_zero_lambdas_is_valid(OecMethod method)
    {
        var options = new OecOptions { Method = method, MuLossLambda = 0, ZLossLambda = 0, SoftCap = 1e-3 };
        var e = Record.Exception(options.Validate);
        Assert.Null(e);
    }

    [Theory]
    [InlineData(-1e-4)]
    [InlineData(-1.0)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(double.NegativeInfinity)]
    public void An_impossible_mu_loss_lambda_throws_naming_the_option_and_the_value(double lambda)
    {
        var e = Assert.Throws<ArgumentException>(new OecOptions { MuLossLambda = lambda }.Validate);
        Assert.Contains("oec.mu_loss_lambda", e.Message);
        Assert.Contains(lambda.ToString(), e.Message);
    }

    [Theory]
    [InlineData(-1e-4)]
    [InlineData(-2.5)]
    [InlineData(double.NaN)]
    [InlineData(double.PositiveInfinity)]
    public void An_impossible_z_loss_lambda_throws_naming_the_option_and_the_value(double lambda)
    {
        var e = Assert.Throws<ArgumentException>(new OecOptions { ZLossLambda = lambda }.Validate);
        Assert.Contains("oec.z_loss_lambda", e.Message);
        Assert.Contains(lambda.ToString(), e.Message);
    }

    [Theory]
    [InlineData(0.0)]
    [InlineData(-30.0)]
    [InlineData(double.PositiveInfinity)]
    [InlineData(double.NegativeInfinity)]
    [InlineData(double.NaN)]
    public void A_zero_negative_or_non_finite_soft_cap_throws_naming_the_option_and_the_value(double cap)
    {
        var e = Assert.Throws<ArgumentException>(new OecOptions { SoftCap = cap }.Validate);
        Assert.Contains("oec.soft_cap", e.Message);
        Assert.Contains(cap.ToString(), e.Message);
    }

    [Fact]
    public void An_undefined_method_throws_naming_the_option_and_the_value()
    {
        var e = Assert.Throws<ArgumentException>(new OecOptions { Method = (OecMethod)99 }.Validate);
        Assert.Contains("oec.method", e.Message);
        Assert.Contains("99", e.Message);
    }
}
