// The launch shape of the elementwise kernels (swiglu.cu, adamw.cu): 256 threads a block, each thread looping over
// the grid's stride, so that any grid covers any number of items.
namespace Kernels.Ops;

static class Elementwise
{
    public const uint Threads = 256;
    const long MaxBlocks = 1 << 16; // 16M threads: beyond what a GPU runs at once (an H200: 132 SMs x 2048), so no loss

    /// <summary>Blocks for <paramref name="items"/> items, one a thread (at least one block).</summary>
    public static uint Blocks(long items) => (uint)Math.Clamp((items + Threads - 1) / Threads, 1, MaxBlocks);
}
