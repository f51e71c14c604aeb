// OEC_LIBTORCH resolved in process: the errors for a missing directory, file, python or a wrong version, and the
// version files read; the child oecrun and msbuild runs are in OecRun.FunctionalTests.
using System.Runtime.Versioning;

namespace Rank.UnitTests;

[SupportedOSPlatform("linux")] // Unix file modes
public class ExternalLibTorchTests
{
    /// <summary>Empty files under the names Resolve checks: enough for every check before anything is loaded.</summary>
    static string FakeLayout(TempDirectory temp, string version, params string[] files)
    {
        string lib = Path.Combine(temp.Path, "torch", "lib");
        Directory.CreateDirectory(lib);
        foreach (string file in files) File.WriteAllText(Path.Combine(lib, file), "");
        File.WriteAllText(Path.Combine(temp.Path, "torch", "version.py"), $"__version__ = '{version}'\n");
        return lib;
    }

    [Fact]
    public void Resolve_of_a_missing_directory_names_the_variable_the_path_and_what_was_expected()
    {
        using var temp = new TempDirectory();
        string missing = temp.File("no-such-lib");

        var error = Assert.Throws<InvalidOperationException>(() => ExternalLibTorch.Resolve(missing, TextWriter.Null));

        Assert.Equal($"OEC_LIBTORCH={missing}: directory {missing} does not exist; expected a directory holding libtorch's shared libraries " +
                     "(libc10.so, libtorch_cpu.so, libtorch.so), e.g. a PyTorch install's torch/lib", error.Message);
    }

    [Fact]
    public void Resolve_of_a_directory_without_libtorch_cpu_names_that_file()
    {
        using var temp = new TempDirectory();
        string lib = FakeLayout(temp, "2.10.0", "libc10.so", "libtorch.so");

        var error = Assert.Throws<InvalidOperationException>(() => ExternalLibTorch.Resolve(lib, TextWriter.Null));

        Assert.StartsWith($"OEC_LIBTORCH={lib}: {Path.Combine(lib, "libtorch_cpu.so")} not found; expected libtorch's shared libraries", error.Message);
    }

    [Fact]
    public void Resolve_of_an_older_version_py_says_found_and_expected()
    {
        using var temp = new TempDirectory();
        string lib = FakeLayout(temp, "2.9.1+cu126", "libc10.so", "libtorch_cpu.so", "libtorch.so");

        var error = Assert.Throws<InvalidOperationException>(() => ExternalLibTorch.Resolve(lib, TextWriter.Null));

        Assert.Contains("libtorch 2.9.1+cu126", error.Message);
        Assert.Contains("found 2.9, expected 2.10", error.Message);
    }

    [Fact]
    public void Resolve_in_a_build_that_bundles_libtorch_refuses_OEC_LIBTORCH_naming_the_bundled_copy()
    {
        using var temp = new TempDirectory();
        string lib = FakeLayout(temp, "2.10.0+cu128", "libc10.so", "libtorch_cpu.so", "libc10_cuda.so", "libtorch_cuda.so", "libtorch.so");
        string bundled = ExternalLibTorch.BundledLibTorch()!;

        var error = Assert.Throws<InvalidOperationException>(() => ExternalLibTorch.Resolve(lib, TextWriter.Null));

        Assert.StartsWith(AppContext.BaseDirectory, bundled); // the test build bundles the libtorch-cpu package
        Assert.Contains($"but this oecrun bundles libtorch ({bundled})", error.Message);
        Assert.Contains("-p:LibTorch=none", error.Message);
    }

    [Fact]
    public void ReadVersion_reads_a_PyTorch_version_py_and_a_libtorch_archives_build_version()
    {
        using var pytorch = new TempDirectory();
        using var archive = new TempDirectory();
        string pytorchLib = FakeLayout(pytorch, "2.10.0+cu128");
        string archiveLib = Path.Combine(archive.Path, "libtorch", "lib");
        Directory.CreateDirectory(archiveLib);
        File.WriteAllText(Path.Combine(archive.Path, "libtorch", "build-version"), "2.10.0+cpu\n");

        Assert.Equal(("2.10.0+cu128", Path.Combine(pytorch.Path, "torch", "version.py")), ExternalLibTorch.ReadVersion(pytorchLib + "/"));
        Assert.Equal(("2.10.0+cpu", Path.Combine(archive.Path, "libtorch", "build-version")), ExternalLibTorch.ReadVersion(archiveLib));
        Assert.Equal((null, null), ExternalLibTorch.ReadVersion(pytorch.Path));
    }

    static string Script(TempDirectory temp, string body)
    {
        string path = temp.File("python3");
        File.WriteAllText(path, "#!/bin/sh\n" + body + "\n");
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        return path;
    }

    [Fact]
    public void PythonTorchLib_runs_the_torch_import_and_returns_what_python_prints()
    {
        using var temp = new TempDirectory();
        // the fake python checks it was asked the real question before answering
        string python = Script(temp, $"[ \"$1\" = -c ] && [ \"$2\" = \"{ExternalLibTorch.PythonScript}\" ] && echo /opt/site-packages/torch/lib");

        Assert.Equal("/opt/site-packages/torch/lib", ExternalLibTorch.PythonTorchLib(python));
    }

    [Fact]
    public void PythonTorchLib_without_torch_names_the_variable_the_command_and_pythons_last_error_line()
    {
        using var temp = new TempDirectory();
        string python = Script(temp, "echo 'Traceback (most recent call last):' >&2; echo \"ModuleNotFoundError: No module named 'torch'\" >&2; exit 1");

        var error = Assert.Throws<InvalidOperationException>(() => ExternalLibTorch.PythonTorchLib(python));

        Assert.StartsWith($"OEC_LIBTORCH=python: `{python} -c", error.Message);
        Assert.Contains("exited with code 1: ModuleNotFoundError: No module named 'torch'", error.Message);
    }

    [Fact]
    public void PythonTorchLib_with_no_such_python_says_it_could_not_start()
    {
        using var temp = new TempDirectory();
        string missing = temp.File("python3");

        var error = Assert.Throws<InvalidOperationException>(() => ExternalLibTorch.PythonTorchLib(missing));

        Assert.Contains("could not start", error.Message);
        Assert.Contains($"expected {missing} on PATH with torch installed", error.Message);
    }
}
