// The hooks by which an OEC method enters the training step: on the logits, on the loss, after the optimizer step.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

/// <summary>
/// One mitigation of the head (<see cref="OecMethod"/>), as the hooks the step calls; each defaults to doing nothing.
/// A method is one type implementing the hooks it needs, resolved from its enum member by <see cref="OecOptions.Resolve"/>.
/// The token-wise hooks (<see cref="TransformLogits"/>, <see cref="TokenPenalty"/>) see one chunk of tokens at a time
/// in the fused head (<see cref="ChunkedHead"/>); the hook on E (<see cref="WeightRegulariser"/>) runs once per forward pass.
/// </summary>
public interface IOecMethod
{
    /// <summary>The model's logits under the method: [N, V_local] fp32 -> [N, V_local] fp32, element-wise (a sharded
    /// head applies it to its columns). The loss and the logged cross-entropy take the transformed logits.</summary>
    Tensor TransformLogits(Tensor logits) => logits;

    /// <summary>A per-token penalty on log Z added to each token's cross-entropy (and averaged with it over the
    /// tokens): logZ [N] -> [N]; null when there is none.</summary>
    Tensor? TokenPenalty(Tensor logZ) => null;

    /// <summary>The regulariser on E [V_local, H] added once per forward pass, a scalar; null when there is none.</summary>
    Tensor? WeightRegulariser(Tensor weight, IVocabularyReduction vocab) => null;

    /// <summary>After every optimizer step: changes E [V_local, H] in place, without gradient.</summary>
    void AfterStep(Tensor weight, IVocabularyReduction vocab) { }
}
