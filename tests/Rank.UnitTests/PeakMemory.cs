// The peak of the bytes allocated through malloc while an action runs (libtorch's CPU tensors), sampled by a thread.
using System.Runtime.InteropServices;

namespace Rank.UnitTests;

/// <summary>
/// Peak bytes an action allocates above what was allocated before it: glibc's mallinfo2 (uordblks, the bytes in use in
/// every arena, plus hblkhd, those in mmapped chunks) read over and over by a thread of its own while the action runs.
/// libtorch's CPU allocator takes every tensor from malloc and frees it when the last reference goes, so these are the
/// tensors alive; the peak of a step lies inside libtorch's backward, where no code of ours runs, hence the sampling
/// (each read takes microseconds; the activations stay alive from the end of the forward into the backward, far longer).
/// The process's VmHWM would not do: the trainer has glibc keep freed memory for reuse (TorchRuntime: mallopt
/// M_MMAP_MAX = 0, no trimming), so a step's tensors reuse memory still resident from earlier steps and the resident
/// size does not rise with them (reset through /proc/self/clear_refs, it measured 0 to 18 KB a sequence, not 7 MB).
/// </summary>
internal static partial class PeakMemory
{
    /// <summary>glibc's struct mallinfo2: ten size_t fields.</summary>
    [StructLayout(LayoutKind.Sequential)]
    struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [LibraryImport("libc.so.6", EntryPoint = "mallinfo2")]
    private static partial MallInfo2 MallInfo();

    /// <summary>Bytes allocated through malloc and not freed, now.</summary>
    public static long Allocated()
    {
        var m = MallInfo();
        return (long)(m.Uordblks + m.Hblkhd);
    }

    /// <summary>The peak bytes allocated above those allocated before <paramref name="action"/>, while it ran.</summary>
    public static long During(Action action)
    {
        long before = Allocated(), peak = before;
        bool done = false;
        var sampler = new Thread(() =>
        {
            while (!Volatile.Read(ref done)) peak = Math.Max(peak, Allocated());
        });
        sampler.Start();
        try
        {
            action();
        }
        finally
        {
            Volatile.Write(ref done, true);
            sampler.Join();
        }
        return Math.Max(peak, Allocated()) - before;
    }
}
