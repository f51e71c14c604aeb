// Compiled kernels on disk, keyed by everything that goes into a compilation, so that a process compiles a source once
// per machine and GPU architecture, not once per start.
using System.Security.Cryptography;
using System.Text;

namespace Kernels;

/// <summary>
/// Cubins under a directory: OEC_KERNEL_CACHE, else $XDG_CACHE_HOME/oec/kernels, else ~/.cache/oec/kernels. A file is
/// named by its source and the SHA-256 of the compiler's version, the options (the architecture among them), the source
/// and its headers, so a changed source or another GPU never reads a stale binary. Written whole or not at all (a
/// temporary file renamed into place), so a process killed mid-write or two ranks compiling at once leave no torn file.
/// </summary>
public sealed class KernelCache(string? directory)
{
    public const string Variable = "OEC_KERNEL_CACHE";

    /// <summary>The directory, or null where none could be named (no home directory): compiled every time.</summary>
    public string? Directory { get; } = directory;

    /// <summary>The cache of this process's environment.</summary>
    public static KernelCache Default()
    {
        if (Environment.GetEnvironmentVariable(Variable) is { Length: > 0 } explicitDirectory) return new(explicitDirectory);
        string? root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } xdg ? xdg
            : Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) is { Length: > 0 } home ? Path.Combine(home, ".cache") : null;
        return new(root is null ? null : Path.Combine(root, "oec", "kernels"));
    }

    /// <summary>The hex SHA-256 of the parts, each length-prefixed (so that no two lists of parts hash alike).</summary>
    public static string Key(IEnumerable<string> parts)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (string part in parts)
        {
            byte[] bytes = Encoding.UTF8.GetBytes(part);
            hash.AppendData(BitConverter.GetBytes((long)bytes.Length));
            hash.AppendData(bytes);
        }
        return Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
    }

    /// <summary>The file of <paramref name="name"/> under <paramref name="key"/>.</summary>
    public string? PathOf(string name, string key) => Directory is null ? null : System.IO.Path.Combine(Directory, $"{name}-{key[..16]}.cubin");

    /// <summary>The cached binary, else <paramref name="compile"/>'s, stored for next time. A cache that cannot be
    /// written costs a warning on stderr and a compilation per process, never the kernel.</summary>
    public byte[] GetOrAdd(string name, string key, Func<byte[]> compile)
    {
        string? path = PathOf(name, key);
        if (path is not null && File.Exists(path))
        {
            byte[] cached = File.ReadAllBytes(path);
            if (cached.Length > 0) return cached;
        }
        byte[] binary = compile();
        if (path is null) return binary;
        string temporary = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
        try
        {
            System.IO.Directory.CreateDirectory(Directory!);
            File.WriteAllBytes(temporary, binary);
            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            try { File.Delete(temporary); } catch (IOException) { } // the warning below says what went wrong
            Console.Error.WriteLine($"kernels: could not store {name} in the kernel cache {Directory} ({e.Message}); set {Variable} to a writable directory");
        }
        return binary;
    }
}
