using TorchSharp;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class TorchRuntimeTests
{
    [Fact]
    public void EnsureLoaded_does_not_throw_in_the_test_host()
    {
        var error = Record.Exception(TorchRuntime.EnsureLoaded);

        Assert.Null(error);
    }

    [Fact]
    public void After_EnsureLoaded_glibc_keeps_freed_memory_for_reuse()
    {
        TorchRuntime.EnsureLoaded();

        Assert.True(TorchRuntime.KeepsFreedMemory); // this machine's C library is glibc: both mallopt calls succeeded
    }

    [Fact]
    public void TorchSharp_multiplies_two_matrices_as_by_hand()
    {
        TorchRuntime.EnsureLoaded();
        using var a = tensor(new float[] { 1, 2, 3, 4 }).view(2, 2);
        using var b = tensor(new float[] { 5, 6, 7, 8 }).view(2, 2);

        using var product = a.matmul(b);

        // [[1*5 + 2*7, 1*6 + 2*8], [3*5 + 4*7, 3*6 + 4*8]]
        Assert.Equal(new long[] { 2, 2 }, product.shape);
        Assert.Equal(new double[] { 19, 22, 43, 50 }, Tensors.Values(product));
    }

    [Fact]
    public void LibTorchSharpPath_finds_the_library_in_the_build_output()
    {
        string path = TorchRuntime.LibTorchSharpPath();

        Assert.True(File.Exists(path), path);
        Assert.Equal("libLibTorchSharp.so", Path.GetFileName(path));
        Assert.StartsWith(AppContext.BaseDirectory, path);
    }

    [Fact]
    public void LoaderError_is_null_for_the_output_library()
    {
        Assert.Null(TorchRuntime.LoaderError(NativeFiles.OutputLibrary));
    }

    [Fact]
    public void LoaderError_for_a_file_that_is_not_a_library_is_one_line_naming_the_file()
    {
        using var temp = new TempDirectory();
        string fake = temp.File("libfake.so");
        File.WriteAllText(fake, "this is not a shared library\nsecond line\n");

        string? error = TorchRuntime.LoaderError(fake);

        Assert.NotNull(error);
        Assert.DoesNotContain('\n', error);
        Assert.Contains("libfake.so", error);
    }

    [Fact]
    public void LoaderError_for_a_missing_path_says_not_found()
    {
        using var temp = new TempDirectory();
        string missing = temp.File("libmissing.so");

        string? error = TorchRuntime.LoaderError(missing);

        Assert.NotNull(error);
        Assert.Contains(missing, error);
        Assert.Contains("not found", error);
    }
}
