// libtorch from outside this program: OEC_LIBTORCH names a directory of libtorch's shared libraries (a PyTorch install's
// torch/lib) or `python`; they are loaded before TorchSharp so that its own lookups find them instead of a bundled copy.
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;

namespace Rank;

/// <summary>Where libtorch comes from and what it is: <paramref name="Directory"/> null means the copy bundled with
/// oecrun (the libtorch-cpu NuGet package); <paramref name="Version"/> null means no version file could be read.</summary>
public sealed record LibTorchSource(string? Directory, string? Setting, string? Version, string? VersionFile, IReadOnlyList<string> Libraries);

public static partial class ExternalLibTorch
{
    public const string Variable = "OEC_LIBTORCH";

    /// <summary>Set to 1 to accept a libtorch whose major.minor differs from <see cref="ExpectedVersion"/>.</summary>
    public const string AnyVersionVariable = "OEC_LIBTORCH_ANY_VERSION";

    /// <summary>The libtorch major.minor that TorchSharp 0.107 was built against; its C++ ABI is not kept across minors.</summary>
    public const string ExpectedVersion = "2.10";

    /// <summary>The command whose output is a PyTorch install's torch/lib directory (OEC_LIBTORCH=python).</summary>
    public const string PythonScript = "import torch,os;print(os.path.dirname(torch.__file__)+'/lib')";

    static readonly TimeSpan PythonTimeout = TimeSpan.FromSeconds(60); // importing torch with CUDA takes seconds, not minutes

    // Dependency order, verified on the GPU machine: each library's DT_NEEDED names are satisfied by the ones already
    // loaded (the dynamic loader matches them by soname), so nothing is looked up anywhere else. The CUDA pair is
    // absent from a CPU-only libtorch.
    static readonly (string File, bool Required)[] LoadOrder =
        [("libc10.so", true), ("libtorch_cpu.so", true), ("libc10_cuda.so", false), ("libtorch_cuda.so", false), ("libtorch.so", true)];

    static string RequiredFiles => string.Join(", ", LoadOrder.Where(l => l.Required).Select(l => l.File));

    /// <summary>Reads OEC_LIBTORCH and checks what it names, loading nothing: the directory, the libraries to load in
    /// order, the version. Unset means the bundled libtorch, which a -p:LibTorch=none build does not have; set, it
    /// needs such a build.</summary>
    public static LibTorchSource Resolve(string? setting, TextWriter warnings, string python = "python3")
    {
        string? bundled = BundledLibTorch();
        if (string.IsNullOrWhiteSpace(setting))
            return bundled is not null ? new LibTorchSource(null, null, null, null, [])
                : throw new InvalidOperationException($"{Variable} is not set, and this oecrun has no libtorch of its own (built with -p:LibTorch=none): " +
                                                      $"set {Variable} to a directory holding libtorch's shared libraries ({RequiredFiles}), " +
                                                      "e.g. a PyTorch install's torch/lib, or to 'python' to ask python3 where torch is");

        string directory = setting == "python" ? PythonTorchLib(python) : Path.GetFullPath(setting);
        if (!Directory.Exists(directory))
            throw new InvalidOperationException($"{Variable}={setting}: directory {directory} does not exist; expected a directory holding " +
                                                $"libtorch's shared libraries ({RequiredFiles}), e.g. a PyTorch install's torch/lib");
        var libraries = new List<string>();
        foreach (var (file, required) in LoadOrder)
        {
            string path = Path.Combine(directory, file);
            if (File.Exists(path)) libraries.Add(path);
            else if (required)
                throw new InvalidOperationException($"{Variable}={setting}: {path} not found; expected libtorch's shared libraries ({RequiredFiles}) in {directory}");
        }
        var (version, versionFile) = ReadVersion(directory);
        if (version is null)
            warnings.WriteLine($"warning: {Variable}={setting}: no libtorch version found (neither ../version.py nor ../build-version beside {directory}); " +
                               $"cannot check it is {ExpectedVersion}, which this TorchSharp was built against");
        else if (MajorMinor(version) != ExpectedVersion)
        {
            string message = $"{Variable}={setting}: libtorch {version} (from {versionFile}), but this TorchSharp was built against libtorch " +
                             $"{ExpectedVersion}: found {MajorMinor(version)}, expected {ExpectedVersion}";
            if (Environment.GetEnvironmentVariable(AnyVersionVariable) != "1")
                throw new InvalidOperationException($"{message} (set {AnyVersionVariable}=1 to use it anyway)");
            warnings.WriteLine($"warning: {message}; used anyway ({AnyVersionVariable}=1)");
        }
        // TorchSharp loads the bundled copy by its path whatever is loaded already, and two libtorch in one process
        // abort at start ("Tried to register multiple backend fallbacks"): only a build without one can take another.
        if (bundled is not null)
            throw new InvalidOperationException($"{Variable}={setting}, but this oecrun bundles libtorch ({bundled}), which TorchSharp would load beside " +
                                                $"the one in {directory}: use a build made with -p:LibTorch=none (build/publish-bundle.sh), or unset {Variable}");
        return new LibTorchSource(directory, setting, version, versionFile, libraries);
    }

    /// <summary>Loads the libraries of <paramref name="source"/> in order, each by its path, for the life of the process.
    /// TorchSharp's own lookups by name ("torch_cpu", and libLibTorchSharp.so's needs) then find them by soname.</summary>
    public static void Load(LibTorchSource source)
    {
        foreach (string library in source.Libraries)
            if (!NativeLibrary.TryLoad(library, out _))
                throw new InvalidOperationException($"{Variable}={source.Setting}: {library} failed to load: {TorchRuntime.LoaderError(library) ?? "unknown error"}");
    }

    /// <summary>The libtorch_cpu.so that the libtorch-cpu package put on this program's native search path (the build
    /// output's runtimes/linux-x64/native, or beside a published oecrun), or null for a -p:LibTorch=none build.</summary>
    public static string? BundledLibTorch() =>
        (AppContext.GetData("NATIVE_DLL_SEARCH_DIRECTORIES") as string ?? "")
            .Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(dir => Path.Combine(dir, "libtorch_cpu.so")).FirstOrDefault(File.Exists);

    /// <summary>The version beside a libtorch lib directory: a PyTorch install's torch/version.py (`__version__ = '2.10.0+cu128'`)
    /// or a libtorch archive's build-version (`2.10.0+cpu`); (null, null) when neither is there.</summary>
    public static (string? Version, string? File) ReadVersion(string directory)
    {
        string parent = Path.GetDirectoryName(Path.TrimEndingDirectorySeparator(directory)) ?? directory;
        string versionPy = Path.Combine(parent, "version.py");
        if (File.Exists(versionPy) && PythonVersion().Match(File.ReadAllText(versionPy)) is { Success: true } match)
            return (match.Groups[1].Value, versionPy);
        string buildVersion = Path.Combine(parent, "build-version");
        if (File.Exists(buildVersion) && File.ReadAllText(buildVersion).Trim() is { Length: > 0 } text)
            return (text, buildVersion);
        return (null, null);
    }

    /// <summary>"2.10.0+cu128" gives "2.10"; anything without two leading numbers is returned as it is.</summary>
    static string MajorMinor(string version) => LeadingMajorMinor().Match(version) is { Success: true } m ? m.Value : version;

    [GeneratedRegex(@"^__version__\s*=\s*['""]([^'""]+)['""]", RegexOptions.Multiline)]
    private static partial Regex PythonVersion();

    [GeneratedRegex(@"^\d+\.\d+")]
    private static partial Regex LeadingMajorMinor();

    /// <summary>torch/lib of the torch that <paramref name="python"/> imports.</summary>
    public static string PythonTorchLib(string python = "python3")
    {
        string what = $"{Variable}=python: `{python} -c \"{PythonScript}\"`";
        string directory = Python.Run(python, ["-c", PythonScript], PythonTimeout, what).Output.Trim();
        if (directory.Length == 0) throw new InvalidOperationException($"{what} printed nothing; expected the path of torch/lib");
        return directory;
    }

    /// <summary>The files of libtorch and TorchSharp's native library mapped into this process, from /proc/self/maps.</summary>
    public static IReadOnlyList<string> MappedLibraries() =>
        File.Exists("/proc/self/maps")
            ? File.ReadLines("/proc/self/maps")
                .Select(line => line.IndexOf('/') is int slash and >= 0 ? line[slash..] : "")
                .Where(path => Path.GetFileName(path) is string name && (name.StartsWith("libc10", StringComparison.Ordinal) ||
                               name.StartsWith("libtorch", StringComparison.Ordinal) || name.StartsWith("libLibTorchSharp", StringComparison.Ordinal)))
                .Distinct().ToList()
            : [];
}
