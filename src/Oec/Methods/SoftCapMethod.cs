// oec.method = soft_cap: logits l -> c * tanh(l / c).
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

public sealed class SoftCapMethod(double cap) : IOecMethod
{
    public Tensor TransformLogits(Tensor logits) => OutputEmbedding.SoftCap(logits, cap);
}
