// Options of the output-embedding-centering methods and their baselines.
namespace Oec;

/// <summary>The mitigation applied to the language-modelling head (README.md, "The method"); each is a type
/// (<see cref="IOecMethod"/>) that <see cref="OecOptions.Resolve"/> names.</summary>
public enum OecMethod
{
    /// <summary>No mitigation: the baseline that diverges at large learning rates.</summary>
    None,
    /// <summary>Add lambda * mean over tokens of (log Z)^2 to the training loss.</summary>
    ZLoss,
    /// <summary>Logits l -> c * tanh(l / c).</summary>
    SoftCap,
    /// <summary>Add lambda * ||mu||^2 to the training loss, once per forward pass.</summary>
    MuLoss,
    /// <summary>After every optimizer step, E -> E - mu. No hyperparameter.</summary>
    MuCentering,
}

public sealed record OecOptions
{
    public OecMethod Method { get; init; } = OecMethod.MuCentering;
    /// <summary>lambda of mu-loss; the paper's default 1e-4, effective from 1e-4 to 1e2.</summary>
    public double MuLossLambda { get; init; } = 1e-4;
    /// <summary>lambda of z-loss; the paper's default 1e-4.</summary>
    public double ZLossLambda { get; init; } = 1e-4;
    /// <summary>c of logit soft-capping; the paper's default 30.</summary>
    public double SoftCap { get; init; } = 30.0;

    /// <summary>The method's hooks with these hyperparameters: the one place where the configured method becomes its type.</summary>
    public IOecMethod Resolve() => Method switch
    {
        OecMethod.None => new NoneMethod(),
        OecMethod.ZLoss => new ZLossMethod(ZLossLambda),
        OecMethod.SoftCap => new SoftCapMethod(SoftCap),
        OecMethod.MuLoss => new MuLossMethod(MuLossLambda),
        OecMethod.MuCentering => new MuCenteringMethod(),
        _ => throw new ArgumentException($"oec.method = {Method}: not a method"),
    };

    /// <summary>Throws naming the option and value when a setting is impossible.</summary>
    public void Validate()
    {
        Resolve(); // an undefined method throws
        if (!(MuLossLambda >= 0) || double.IsInfinity(MuLossLambda))
            throw new ArgumentException($"oec.mu_loss_lambda = {MuLossLambda}: must be finite and >= 0");
        if (!(ZLossLambda >= 0) || double.IsInfinity(ZLossLambda))
            throw new ArgumentException($"oec.z_loss_lambda = {ZLossLambda}: must be finite and >= 0");
        if (!(SoftCap > 0) || double.IsInfinity(SoftCap))
            throw new ArgumentException($"oec.soft_cap = {SoftCap}: must be finite and > 0");
    }
}
