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
        using var noGrad = no_grad();
        var sharded = model.ShardedNames;
        double SquaredNorm(bool ofShards) => model.named_parameters().Where(n => sharded.Contains(n.name) == ofShards && n.parameter.grad is not null)
            .Sum(n => { using var g = n.parameter.grad!.to_type(ScalarType.Float64); return g.square().sum().item<double>(); });
        using var shards = tensor(new[] { SquaredNorm(ofShards: true) }, device: model.OutputEmbedding.device);
        vocabGroup.AllReduce(shards, ReduceOp.Sum);
        double norm = Math.Sqrt(SquaredNorm(ofShards: false) + shards.item<double>());
        double coefficient = maxNorm > 0 ? Math.Min(1, maxNorm / (norm + 1e-6)) : 1;
        if (coefficient < 1)
            foreach (var p in model.parameters().Where(p => p.grad is not null)) p.grad!.mul_(coefficient);
        return norm;
    }
}
