// oec.method = soft_cap: logits l -> c * tanh(l / c).
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

public sealed class SoftCapMethod(double cap) : IOecMethod
{
    /// <summary>c, the bound on every logit.</summary>
    public double Cap => cap;

    public Tensor TransformLogits(Tensor logits) => OutputEmbedding.SoftCap(logits, cap);
}
