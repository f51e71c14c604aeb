// Where a CUDA library that libtorch does not load itself (NCCL, NVRTC) is found: the environment variable that names
// it, the dynamic loader (a copy already in the process, LD_LIBRARY_PATH, ld.so.cache), then the nvidia wheels that
// PyTorch installs under a Python's site-packages (a virtual environment's first). Compiled into Collectives and
// Kernels, which share no project.
using System.Runtime.InteropServices;

namespace Oec.Native;

static class NativeLibrarySearch
{
    /// <summary>
    /// The path (or loader name) of the library, or null, with every place looked in. <paramref name="variable"/> set:
    /// that file or nothing. Else each of <paramref name="names"/> through the loader, then each of <paramref
    /// name="places"/>: an absolute path as it is, a relative one (e.g. "nvidia/nccl/lib/libnccl.so.2") under each
    /// Python's site-packages and dist-packages in $VIRTUAL_ENV/lib, /usr/local/lib, /usr/lib, /opt/conda/lib, ~/.local/lib.
    /// </summary>
    public static (string? Path, List<string> Searched) Find(string variable, IReadOnlyList<string> names, IReadOnlyList<string> places)
    {
        var searched = new List<string>();
        string? explicitPath = Environment.GetEnvironmentVariable(variable);
        if (explicitPath is not null)
        {
            bool exists = File.Exists(explicitPath);
            searched.Add($"{variable}={explicitPath}{(exists ? "" : " (no such file)")}");
            return (exists ? explicitPath : null, searched);
        }
        searched.Add($"{variable}=(unset)");
        searched.Add($"the dynamic loader's path for {string.Join(", ", names)} (LD_LIBRARY_PATH={Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "(unset)"}, /etc/ld.so.cache)");
        foreach (string name in names)
            if (NativeLibrary.TryLoad(name, out var handle))
            {
                NativeLibrary.Free(handle);
                return (name, searched);
            }
        var roots = new List<string>();
        if (Environment.GetEnvironmentVariable("VIRTUAL_ENV") is { Length: > 0 } venv) roots.Add(Path.Combine(venv, "lib"));
        roots.AddRange(["/usr/local/lib", "/usr/lib", "/opt/conda/lib", Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".local/lib")]);
        var candidates = places.Where(Path.IsPathRooted).Concat(
            from root in roots.Where(Directory.Exists)
            from python in Directory.EnumerateDirectories(root, "python3*")
            from packages in new[] { "site-packages", "dist-packages" }
            from place in places.Where(p => !Path.IsPathRooted(p))
            select Path.Combine(python, packages, place));
        foreach (string candidate in candidates)
        {
            searched.Add(candidate);
            if (File.Exists(candidate)) return (candidate, searched);
        }
        return (null, searched);
    }
}
