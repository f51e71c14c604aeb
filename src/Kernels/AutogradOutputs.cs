// Frees the placeholder that TorchSharp's custom autograd functions keep for every output until the graph is freed.
using System.Reflection;
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels;

/// <summary>
/// TorchSharp 0.107's Function keeps an uninitialised empty_like of each output (Node._outputCache), only so that a
/// missing output gradient can be materialised as zeros_like(it) in backward. On a GPU the caching allocator holds that
/// memory for the life of the graph: a second activation per output of every custom function. <see cref="Slim"/>
/// replaces each placeholder by a one-element tensor expanded to the output's shape (stride 0): zeros_like of it is
/// still a zeroed tensor of the output's shape, dtype and device, and the output's bytes are not held twice.
/// </summary>
public static class AutogradOutputs
{
    static readonly FieldInfo? NodeField = typeof(torch.autograd.AutogradContext).GetField("_node", BindingFlags.NonPublic | BindingFlags.Instance);

    /// <summary>Runs <paramref name="apply"/> (a function's apply, given a slot to pass among its arguments, which the
    /// function's forward fills with <see cref="Fill"/>) and slims the placeholders of its output.</summary>
    public static T Apply<T>(Func<Slot, T> apply)
    {
        var slot = new Slot();
        var output = apply(slot);
        if (slot.Context is { } ctx) Slim(ctx);
        return output;
    }

    /// <summary>In a function's forward: hands its context to the <see cref="Slot"/> among <paramref name="vars"/>.</summary>
    public static void Fill(torch.autograd.AutogradContext ctx, object[] vars)
    {
        foreach (var v in vars)
            if (v is Slot slot) slot.Context = ctx;
    }

    /// <summary>A function's context, carried out of its forward as one of its non-tensor arguments.</summary>
    public sealed class Slot
    {
        public torch.autograd.AutogradContext? Context { get; set; }
    }

    /// <summary>Called with a function's context after its apply returned (the placeholders are made after forward).
    /// Returns false where this TorchSharp keeps no such field (nothing to do, or a version that changed it).</summary>
    public static bool Slim(torch.autograd.AutogradContext ctx)
    {
        var node = NodeField?.GetValue(ctx);
        if (node?.GetType().GetField("_outputCache", BindingFlags.NonPublic | BindingFlags.Instance) is not { } cacheField) return false;
        if (cacheField.GetValue(node) is not List<Tensor> cache) return false;
        for (int i = 0; i < cache.Count; i++)
        {
            if (cache[i] is not { } placeholder || placeholder.numel() <= 1) continue;
            var small = empty(1, placeholder.dtype, placeholder.device).expand(placeholder.shape).DetachFromDisposeScope();
            placeholder.Dispose();
            cache[i] = small;
        }
        return true;
    }

    /// <summary>The bytes the placeholders of <paramref name="ctx"/>'s function hold (for tests and the memory plan).</summary>
    public static long PlaceholderBytes(torch.autograd.AutogradContext ctx)
    {
        var node = NodeField?.GetValue(ctx);
        var cache = node?.GetType().GetField("_outputCache", BindingFlags.NonPublic | BindingFlags.Instance)?.GetValue(node) as List<Tensor>;
        return cache?.Where(t => t is not null).Sum(t => t.is_contiguous() ? t.numel() * t.ElementSize : t.ElementSize) ?? 0;
    }
}
