// The tensors a custom autograd function's backward is handed and returns, disposed where no dispose scope would.
using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels;

/// <summary>
/// libtorch's autograd engine calls a custom function's backward on the thread that owns the gradients' device: the
/// calling thread for CPU tensors, but for CUDA tensors a device thread of its own, where no dispose scope is open
/// (TorchSharp's scopes are per thread). There the wrapper TorchSharp makes for each incoming gradient and the
/// gradients the backward returns (the engine takes references of its own) belong to no scope, and their memory would
/// stay until the garbage collector finalises them, steps later on a GPU. <see cref="Run"/> keeps those wrappers and
/// disposes them at the next backward on the same thread, when the engine has taken its references; on a thread with
/// an open scope (the CPU's path) every wrapper belongs to the scope, which disposes it as before, and nothing is kept.
/// </summary>
public static class BackwardTensors
{
    // TorchSharp 0.107 keeps a tensor's scope in an internal property; where a version lacks it, nothing is kept.
    static readonly PropertyInfo? OwningScope = typeof(Tensor).GetProperty("OwningDisposeScope", BindingFlags.NonPublic | BindingFlags.Instance);

    [ThreadStatic] static List<Tensor>? kept;

    /// <summary>A backward's body: disposes what earlier backwards on this thread kept (they have returned, and the
    /// engine holds its own references), runs <paramref name="body"/>, and keeps <paramref name="gradOutput"/> and the
    /// returned gradients that belong to no dispose scope. Returns the body's gradients (nulls where an input has none).</summary>
    public static List<Tensor> Run(Tensor gradOutput, Func<List<Tensor>> body)
    {
        Release();
        var gradients = body();
        if (OwningScope is null) return gradients;
        kept ??= [];
        foreach (var t in gradients.Append(gradOutput))
            if (t is not null && !t.IsInvalid && OwningScope.GetValue(t) is null && !kept.Any(k => ReferenceEquals(k, t))) kept.Add(t);
        return gradients;
    }

    /// <summary>The wrappers kept on this thread (for tests).</summary>
    public static IReadOnlyList<Tensor> Kept => kept ?? [];

    /// <summary>Disposes the wrappers kept on this thread.</summary>
    public static void Release()
    {
        if (kept is not { Count: > 0 }) return;
        foreach (var t in kept) t.Dispose();
        kept.Clear();
    }
}
