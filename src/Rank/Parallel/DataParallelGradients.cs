// Data parallelism's gradient averaging over the data group: after backward, or overlapped with it layer by layer.
using Collectives;
using Rank.Model;
using TorchSharp;

namespace Rank.Parallel;

/// <summary>
/// Averages every gradient over the data group (<see cref="GradientBucketer"/>). Overlapped, the last micro-batch's
/// backward starts each layer's all-reduces at the model's <see cref="Boundary"/> marks, once that layer's gradients
/// are final; <see cref="Average"/> then starts the rest and waits for all: the same buckets and reductions, so the
/// same bits as after backward.
/// </summary>
public sealed class DataParallelGradients : IGradientReduction
{
    readonly GradientBucketer bucketer;
    bool armed;                 // during the backward whose boundaries start the all-reduces (the step's last micro-batch)
    Exception? boundaryFailure; // a collective that failed to start inside backward, thrown after it

    /// <summary>Averages after backward, through <paramref name="bucketer"/>.</summary>
    public DataParallelGradients(GradientBucketer bucketer) => this.bucketer = bucketer;

    /// <summary>Gradient groups whose all-reduce the last step started during backward: n_layer + 1 when it
    /// overlaps, 0 when every all-reduce waited for the end of backward.</summary>
    public int GroupsStartedInBackward { get; private set; }

    /// <summary>
    /// One group per layer, in the order backward finishes them: ln_f with the untied head (at the input of ln_f),
    /// block n-1, ..., block 0 (each at its input), then the input embedding, reduced after backward (with tying it is
    /// also the head). Sets the model's <see cref="Gpt.BoundaryReached"/>.
    /// </summary>
    public static DataParallelGradients Overlapped(Gpt model, ICommunicator group)
    {
        int layers = model.Layers;
        var named = model.named_parameters().ToList();
        List<torch.Tensor> Where(Func<string, bool> belongs) => named.Where(n => belongs(n.name)).Select(n => (torch.Tensor)n.parameter).ToList();
        var groups = new List<IReadOnlyList<torch.Tensor>> { Where(n => n is "ln_f.weight" or "lm_head") };
        for (int k = layers - 1; k >= 0; k--) groups.Add(Where(n => n.StartsWith($"h.{k}.", StringComparison.Ordinal)));
        groups.Add(Where(n => !(n is "ln_f.weight" or "lm_head" || n.StartsWith("h.", StringComparison.Ordinal))));
        if (groups.Sum(g => g.Count) != named.Count) throw new InvalidOperationException("overlapped all-reduce: a parameter is in no group or in two");
        var gradients = new DataParallelGradients(new GradientBucketer(group, groups));
        model.BoundaryReached = boundary => gradients.Reached(layers - boundary); // boundary k: the input of block k, n_layer: of ln_f
        return gradients;
    }

    /// <summary>Overwrites every parameter with replica 0's, so that all replicas start identical.</summary>
    public void BroadcastParameters() => bucketer.BroadcastParameters(root: 0);

    /// <summary>Before each micro-batch's backward: only the last one's gradients become final, so only its backward
    /// starts all-reduces.</summary>
    public void BeforeBackward(bool lastMicroBatch)
    {
        armed = lastMicroBatch;
        if (lastMicroBatch) GroupsStartedInBackward = 0;
    }

    /// <summary>After each backward: throws the failure of a collective started inside it.</summary>
    public void AfterBackward(long step)
    {
        armed = false;
        if (boundaryFailure is { } failure) throw new CollectiveException($"step {step}: the gradient all-reduce failed to start during backward: {failure.Message}", failure);
    }

    /// <summary>grad = mean over the data group of grad, for every parameter.</summary>
    public void Average() => bucketer.AverageGradients();

    // Group g's gradients are final (on the autograd thread).
    void Reached(int group)
    {
        if (!armed || boundaryFailure is not null) return;
        try { bucketer.Ready(group); GroupsStartedInBackward++; }
        catch (Exception e) { boundaryFailure = e; } // never through libtorch's backward
    }

    public void Dispose() => bucketer.Dispose();
}
