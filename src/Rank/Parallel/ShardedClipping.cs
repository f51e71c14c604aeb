// Gradient clipping by the global norm when the embeddings are split over the vocabulary group.
using Collectives;
using Rank.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.Parallel;

public static class ShardedClipping
{
    /// <summary>
    /// torch's clip_grad_norm_ over a model whose embeddings are split over <paramref name="vocabGroup"/>: the norm of
    /// the whole gradient is sqrt(body^2 + sum over shards of shard^2) (the body's gradient is the same on every shard),
    /// then every gradient is scaled by min(1, maxNorm / (norm + 1e-6)). maxNorm 0: measured, not clipped. Returns the norm.
    /// </summary>
    public static double ClipGradNorm(Gpt model, ICommunicator vocabGroup, double maxNorm)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var sharded = model.ShardedNames;
        var device = model.OutputEmbedding.device;
        var grads = model.named_parameters().Select(n => (Sharded: sharded.Contains(n.name), Grad: n.parameter.grad)).Where(g => g.Grad is not null).ToList();
        // Summed on the device, read once: no wait for the GPU per parameter. [1] fp64 each.
        Tensor SquaredNorm(bool ofShards) => grads.Where(g => g.Sharded == ofShards).Select(g => g.Grad!.to_type(ScalarType.Float64).square().sum())
            .Append(zeros([], ScalarType.Float64, device)).Aggregate((a, b) => a + b).reshape(1);
        var shards = SquaredNorm(ofShards: true);
        vocabGroup.AllReduce(shards, ReduceOp.Sum);
        double norm = Math.Sqrt((SquaredNorm(ofShards: false) + shards).item<double>());
        double coefficient = maxNorm > 0 ? Math.Min(1, maxNorm / (norm + 1e-6)) : 1;
        if (coefficient < 1)
            foreach (var p in model.parameters().Where(p => p.grad is not null)) p.grad!.mul_(coefficient);
        return norm;
    }
}
