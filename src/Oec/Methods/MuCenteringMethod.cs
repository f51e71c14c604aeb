// oec.method = mu_centering: E -> E - mu after every optimizer step.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

public sealed class MuCenteringMethod : IOecMethod
{
    /// <summary>Centres E; ||mu|| before it is left unread, so that a GPU step does not wait for the device here.</summary>
    public void AfterStep(Tensor weight, IVocabularyReduction vocab) => OutputEmbedding.Center(weight, vocab).Dispose();
}
