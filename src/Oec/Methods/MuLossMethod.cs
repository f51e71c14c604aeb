// oec.method = mu_loss: lambda * ||mu||^2 added to the loss, once per forward pass.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

public sealed class MuLossMethod(double lambda) : IOecMethod
{
    public Tensor? WeightRegulariser(Tensor weight, IVocabularyReduction vocab) => OutputEmbedding.MuLoss(weight, vocab, lambda);
}
