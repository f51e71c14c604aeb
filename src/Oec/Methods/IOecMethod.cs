// The hooks by which an OEC method enters the training step: on the logits, on the loss, after the optimizer step.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec;

/// <summary>
/// One mitigation of the head (<see cref="OecMethod"/>), as the hooks the step calls; each defaults to doing nothing.
/// A method is one type implementing the hooks it needs, resolved from its enum member by <see cref="OecOptions.Resolve"/>.
/// </summary>
public interface IOecMethod
{
    /// <summary>The model's logits under the method: [N, V_local] fp32 -> [N, V_local] fp32, element-wise (a sharded
    /// head applies it to its columns). The loss and the logged cross-entropy take the transformed logits.</summary>
    Tensor TransformLogits(Tensor logits) => logits;

    /// <summary>The regulariser added to the cross-entropy of one forward pass, a scalar; null when there is none.
    /// logZ [N] from <see cref="IVocabularyReduction.LogSumExp"/>, weight E [V_local, H].</summary>
    Tensor? Regulariser(Tensor logZ, Tensor weight, IVocabularyReduction vocab) => null;

    /// <summary>After every optimizer step: changes E [V_local, H] in place, without gradient.</summary>
    void AfterStep(Tensor weight, IVocabularyReduction vocab) { }
}
