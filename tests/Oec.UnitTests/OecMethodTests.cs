// Each OEC method as its type: resolved from its enum member, and each hook acting only for the method that has it.
using TorchSharp;
using static TorchSharp.torch;

namespace Oec.UnitTests;

public class OecMethodTests
{
    [Theory]
    [MemberData(nameof(MethodData.All), MemberType = typeof(MethodData))]
    public void Every_method_resolves_to_the_type_named_after_it(OecMethod method)
    {
        var hooks = new OecOptions { Method = method }.Resolve();

        Assert.Equal($"{method}Method", hooks.GetType().Name);
    }

    [Theory]
    [MemberData(nameof(MethodData.All), MemberType = typeof(MethodData))]
    public void Soft_capping_alone_transforms_the_logits_z_loss_and_mu_loss_alone_regularise_mu_centering_alone_changes_E_after_the_step(OecMethod method)
    {
        IOecMethod hooks = new OecOptions { Method = method, ZLossLambda = 0.1, MuLossLambda = 0.1, SoftCap = 1 }.Resolve();
        var vocab = new LocalVocabulary(4);
        var logits = tensor(new float[] { 3, -2, 0.5f, 1, -4, 2, 0, 1.5f }).view(2, 4);
        var weight = tensor(new float[] { 1, 2, 3, -1, 0, 4, 2, 2, 1, 0.5f, -3, 1 }).view(4, 3);
        var after = weight.clone();

        bool transformed = !hooks.TransformLogits(logits).allclose(logits, rtol: 0, atol: 0);
        bool penalisesTokens = hooks.TokenPenalty(logits.logsumexp(-1)) is not null;
        bool regularisesE = hooks.WeightRegulariser(weight, vocab) is not null;
        bool regularised = penalisesTokens || regularisesE;
        hooks.AfterStep(after, vocab);

        Assert.Equal(method == OecMethod.SoftCap, transformed);
        Assert.Equal(method is OecMethod.ZLoss or OecMethod.MuLoss, regularised);
        Assert.Equal(method == OecMethod.ZLoss, penalisesTokens); // per token, inside the chunks of the fused head
        Assert.Equal(method == OecMethod.MuLoss, regularisesE);   // on E, once per forward pass
        Assert.Equal(method == OecMethod.MuCentering, !after.allclose(weight, rtol: 0, atol: 0));
    }
}
