// Shared range checks and ushort -> int widening for ITokenSource implementations.
using System.Numerics;
using System.Runtime.InteropServices;

namespace Data;

internal static class TokenRange
{
    /// <summary>Throws ArgumentOutOfRangeException unless [start, start + length) lies inside [0, count).</summary>
    public static void Check(string name, long count, long start, int length)
    {
        if (start < 0 || start > count || length > count - start)
        {
            throw new ArgumentOutOfRangeException(
                nameof(start),
                $"{name}: read of {length} tokens at start {start} is outside the source's {count} tokens");
        }
    }

    /// <summary>Zero-extends source into destination (equal lengths), Vector-wide where the hardware allows.</summary>
    public static void Widen(ReadOnlySpan<ushort> source, Span<int> destination)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated)
        {
            var wide = MemoryMarshal.Cast<int, uint>(destination);
            for (; i <= source.Length - Vector<ushort>.Count; i += Vector<ushort>.Count)
            {
                Vector.Widen(new Vector<ushort>(source[i..]), out Vector<uint> low, out Vector<uint> high);
                low.CopyTo(wide[i..]);
                high.CopyTo(wide[(i + Vector<uint>.Count)..]);
            }
        }

        for (; i < source.Length; i++)
        {
            destination[i] = source[i];
        }
    }
}
