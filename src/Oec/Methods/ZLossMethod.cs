// oec.method = z_loss: lambda * mean over tokens of (log Z)^2 added to the loss.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

public sealed class ZLossMethod(double lambda) : IOecMethod
{
    /// <summary>lambda, the weight of (log Z)^2.</summary>
    public double Lambda => lambda;

    public Tensor? TokenPenalty(Tensor logZ) => OutputEmbedding.ZLossPerToken(logZ, lambda);
}
