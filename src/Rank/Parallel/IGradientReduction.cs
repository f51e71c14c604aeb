// What the step tells the gradient reduction over the data group: data parallelism's all-reduce, or ZeRO's shards.
namespace Rank.Parallel;

/// <summary>The gradients of the data group's replicas made one: <see cref="DataParallelGradients"/> (all-reduced,
/// every rank holds the whole average) or <see cref="ZeroAdamW"/> (each rank keeps the average of its shard).</summary>
public interface IGradientReduction : IDisposable
{
    /// <summary>Before each micro-batch's backward; <paramref name="lastMicroBatch"/>: the step's last.</summary>
    void BeforeBackward(bool lastMicroBatch);

    /// <summary>After each backward: throws the failure of a collective that ran inside it.</summary>
    void AfterBackward(long step);

    /// <summary>After the last micro-batch: the reduction completed.</summary>
    void Average();
}
