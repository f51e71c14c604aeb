// What a custom backward is handed and returns, on a thread without a dispose scope (as libtorch's CUDA device thread)
// and on one with a scope (the CPU's path).
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels.UnitTests;

public class BackwardTensorsTests
{
    /// <summary>y = 3x; backward: 3 g, through BackwardTensors.Run.</summary>
    sealed class Triple : torch.autograd.SingleTensorFunction<Triple>
    {
        public override string Name => "Triple";
        public override Tensor forward(torch.autograd.AutogradContext ctx, params object[] vars) => (Tensor)vars[0] * 3;
        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, Tensor gradOutput) =>
            BackwardTensors.Run(gradOutput, () => [gradOutput * 3]);
    }

    static Tensor Backward(Tensor x)
    {
        x.grad?.zero_();
        Triple.apply(x).sum().backward();
        return x.grad!;
    }

    [Fact]
    public void Without_a_scope_the_wrappers_a_backward_is_handed_and_returns_are_disposed_by_the_next_backward_on_the_thread()
    {
        Tensor[] first = [], second = [];
        float[] grads = [];
        var thread = new Thread(() =>
        {
            var x = ones(4, requires_grad: true);
            Backward(x);
            first = [.. BackwardTensors.Kept];                  // the incoming gradient and the returned one
            grads = Backward(x).data<float>().ToArray();
            second = [.. BackwardTensors.Kept];
            BackwardTensors.Release();
        });
        thread.Start();
        thread.Join();
        Assert.Equal([3f, 3f, 3f, 3f], grads);                   // the engine took its own references before the release
        Assert.Equal(2, first.Length);
        Assert.All(first, t => Assert.True(t.IsInvalid));        // disposed by the second backward
        Assert.Equal(2, second.Length);
        Assert.All(second, t => Assert.True(t.IsInvalid));       // and these by Release
        Assert.Empty(BackwardTensors.Kept);                      // kept per thread: none on this one
    }

    [Fact]
    public void Within_a_scope_nothing_is_kept_and_the_scope_disposes_the_wrappers()
    {
        var x = ones(4, requires_grad: true);
        using (var scope = NewDisposeScope())
        {
            Assert.Equal([3f, 3f, 3f, 3f], Backward(x).data<float>().ToArray());
            Assert.Empty(BackwardTensors.Kept);
        }
    }
}
