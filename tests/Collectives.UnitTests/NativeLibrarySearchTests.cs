// Where NCCL and NVRTC are looked for (Oec.Native.NativeLibrarySearch, shared by Collectives and Kernels): the variable
// that names the file wins, else the loader, else PyTorch's nvidia wheels in a virtual environment's site-packages;
// every place looked in is named.
using Oec.Native;

namespace Collectives.UnitTests;

public class NativeLibrarySearchTests
{
    const string Variable = "OEC_TEST_NATIVE_LIBRARY";
    static readonly string[] Names = ["libnot-a-library.so.7"];
    static readonly string[] Places = ["nvidia/fake/lib/libfake.so.7"];

    [Fact]
    public void A_wheel_in_the_virtual_environment_is_found_after_the_loader_and_every_place_is_named()
    {
        string root = Directory.CreateTempSubdirectory("oec-venv-").FullName;
        string? previous = Environment.GetEnvironmentVariable("VIRTUAL_ENV");
        try
        {
            string wheel = Path.Combine(root, "lib", "python3.12", "site-packages", Places[0]);
            Directory.CreateDirectory(Path.GetDirectoryName(wheel)!);
            File.WriteAllText(wheel, "");
            Environment.SetEnvironmentVariable("VIRTUAL_ENV", root);

            var (path, searched) = NativeLibrarySearch.Find(Variable, Names, Places);

            Assert.Equal(wheel, path);
            Assert.Equal($"{Variable}=(unset)", searched[0]);
            Assert.Contains("the dynamic loader's path for libnot-a-library.so.7", searched[1]);
            Assert.Equal(wheel, searched[^1]);                            // the virtual environment first
        }
        finally
        {
            Environment.SetEnvironmentVariable("VIRTUAL_ENV", previous);
            Directory.Delete(root, recursive: true);
        }
    }

    [Fact]
    public void The_variable_names_the_one_file_to_use_and_a_missing_file_is_not_replaced_by_another()
    {
        string file = Path.GetTempFileName();
        try
        {
            Environment.SetEnvironmentVariable(Variable, file);
            Assert.Equal(file, NativeLibrarySearch.Find(Variable, Names, Places).Path);

            Environment.SetEnvironmentVariable(Variable, file + ".missing");
            var (path, searched) = NativeLibrarySearch.Find(Variable, ["libc.so.6"], Places);   // the loader has this one
            Assert.Null(path);
            Assert.Equal([$"{Variable}={file}.missing (no such file)"], searched);
        }
        finally
        {
            Environment.SetEnvironmentVariable(Variable, null);
            File.Delete(file);
        }
    }
}
