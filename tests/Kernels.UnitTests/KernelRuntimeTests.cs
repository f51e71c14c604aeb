// The kernel runtime's parts that run without a GPU: the disk cache, the switch, the refusal where the kernels cannot
// run, and the slimming of autograd's output placeholders.
using Tests;
using TorchSharp;
using static TorchSharp.torch;

namespace Kernels.UnitTests;

public class KernelRuntimeTests
{
    [Fact]
    public void The_cache_compiles_a_source_once_and_reads_it_back_in_a_later_process_under_the_same_key_only()
    {
        using var temp = new TempDirectory();
        int compiled = 0;
        byte[] Compile() { compiled++; return [1, 2, 3, (byte)compiled]; }
        string key = KernelCache.Key(["nvrtc (13, 0)", "--gpu-architecture=sm_90", "layernorm.cu", "source text"]);

        var first = new KernelCache(temp.Path).GetOrAdd("layernorm.cu", key, Compile);
        var again = new KernelCache(temp.Path).GetOrAdd("layernorm.cu", key, Compile);   // a new cache object: as a later process
        Assert.Equal(1, compiled);
        Assert.Equal(first, again);

        string otherArch = KernelCache.Key(["nvrtc (13, 0)", "--gpu-architecture=sm_80", "layernorm.cu", "source text"]);
        string otherSource = KernelCache.Key(["nvrtc (13, 0)", "--gpu-architecture=sm_90", "layernorm.cu", "source text!"]);
        Assert.NotEqual(key, otherArch);
        Assert.NotEqual(key, otherSource);
        Assert.NotEqual(KernelCache.Key(["ab", "c"]), KernelCache.Key(["a", "bc"])); // parts are length-prefixed
        new KernelCache(temp.Path).GetOrAdd("layernorm.cu", otherArch, Compile);
        Assert.Equal(2, compiled);
        Assert.Equal(2, Directory.GetFiles(temp.Path, "*.cubin").Length);
        Assert.Empty(Directory.GetFiles(temp.Path, "*.tmp"));                                // written whole, renamed into place
    }

    [Fact]
    public void A_cache_that_cannot_be_written_still_returns_the_compiled_kernel()
    {
        using var temp = new TempDirectory();
        File.WriteAllText(temp.File("file"), "not a directory");
        var cache = new KernelCache(Path.Combine(temp.File("file"), "kernels"));             // a path under a file: unwritable
        var error = new StringWriter();
        var previous = Console.Error;
        Console.SetError(error);
        try { Assert.Equal([7], cache.GetOrAdd("x.cu", KernelCache.Key(["x"]), () => [7])); }
        finally { Console.SetError(previous); }
        Assert.Contains("could not store x.cu in the kernel cache", error.ToString());
        Assert.Contains(KernelCache.Variable, error.ToString());
    }

    [Fact]
    public void The_cache_directory_is_OEC_KERNEL_CACHE_when_set()
    {
        string? previous = Environment.GetEnvironmentVariable(KernelCache.Variable);
        try
        {
            Environment.SetEnvironmentVariable(KernelCache.Variable, "/tmp/oec-kernels-here");
            Assert.Equal("/tmp/oec-kernels-here", KernelCache.Default().Directory);
        }
        finally { Environment.SetEnvironmentVariable(KernelCache.Variable, previous); }
    }

    [SkippableFact]
    public void Without_a_GPU_the_runtime_is_refused_with_every_missing_piece_named()
    {
        Skip.If(cuda.is_available(), "this machine has CUDA");
        Assert.Null(KernelRuntime.For(0, out string? why));
        Assert.Contains("CUDA is not available to TorchSharp", why);
        var e = Assert.Throws<KernelException>(() => KernelRuntime.Require(0));
        Assert.Contains("the fused CUDA kernels cannot run on cuda:0", e.Message);
    }

    [SkippableFact]
    public void On_a_GPU_the_runtime_has_loaded_every_source_when_it_is_handed_out()
    {
        var runtime = Gpu.Runtime();
        Assert.Equal(KernelSources.Names().Where(n => n.EndsWith(".cu")).Order(), runtime.LoadedSources.Order());
    }

    [Fact]
    public void The_fused_kernels_setting_is_off_on_the_CPU_unless_required_and_names_a_bad_value()
    {
        Assert.Null(FusedKernels.Resolve("auto", CPU));
        Assert.Null(FusedKernels.Resolve("off", CPU));
        var on = Assert.Throws<ArgumentException>(() => FusedKernels.Resolve("on", CPU));
        Assert.Contains("train.fused_kernels = on needs a CUDA device", on.Message);
        Assert.Contains("cpu", on.Message);
        var bad = Assert.Throws<ArgumentException>(() => FusedKernels.Resolve("yes", CPU));
        Assert.Contains("train.fused_kernels = 'yes'", bad.Message);
        Assert.Contains("auto, on, off", bad.Message);
    }

    /// <summary>Two outputs, a and 2a, of a [rows, cols] input; ctx kept for the test.</summary>
    sealed class Twice : torch.autograd.MultiTensorFunction<Twice>
    {
        public override string Name => "Twice";

        public override List<Tensor> forward(torch.autograd.AutogradContext ctx, params object[] vars)
        {
            ((StrongBoxContext)vars[1]).Value = ctx;
            var x = (Tensor)vars[0];
            return [x.clone(), x * 2];
        }

        public override List<Tensor> backward(torch.autograd.AutogradContext ctx, List<Tensor> grads) => [grads[0] + 2 * grads[1], null!];
    }

    sealed class StrongBoxContext { public torch.autograd.AutogradContext? Value; }

    [Fact]
    public void Slimmed_placeholders_hold_one_element_each_and_a_missing_output_gradient_is_still_zeros()
    {
        var x = randn(300, 200, requires_grad: true);
        var box = new StrongBoxContext();
        var outputs = Twice.apply(x, box);
        long before = AutogradOutputs.PlaceholderBytes(box.Value!);
        Assert.Equal(2 * 300 * 200 * sizeof(float), before);                                 // an empty_like per output

        Assert.True(AutogradOutputs.Slim(box.Value!));

        Assert.Equal(2 * sizeof(float), AutogradOutputs.PlaceholderBytes(box.Value!));
        outputs[1].sum().backward();                                                          // outputs[0] gets no gradient: zeros of its shape
        Assert.True(x.grad!.eq(2).all().item<bool>());
    }
}
