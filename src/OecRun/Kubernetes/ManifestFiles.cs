// The rendered objects as YAML: one stream for stdout, or a directory of one file per object and a kustomization.yaml.
using k8s;

namespace OecRun.Kubernetes;

public static class ManifestFiles
{
    /// <summary>The first line of a rendered kustomization.yaml: marks a directory that a later rendering may replace.</summary>
    public const string Header = "# Rendered by `oecrun k8s`: render again rather than edit (or patch it from an overlay).";
    /// <summary>The second line starts with this, followed by the command line that rendered the directory.</summary>
    public const string CommandPrefix = "# oecrun k8s ";

    /// <summary>Every object as one YAML stream, documents separated by ---.</summary>
    public static string ToYaml(IEnumerable<Manifest> manifests) =>
        string.Join("---\n", manifests.Select(m => Yaml(m.Object)));

    /// <summary>One object as YAML, ending with a newline (KubernetesYaml.Serialize stops at the last value).</summary>
    public static string Yaml(object value) => KubernetesYaml.Serialize(value).TrimEnd('\n') + "\n";

    /// <summary>
    /// Writes the objects and a kustomization.yaml listing them into `dir`: first into a new sibling directory, then
    /// renamed, so `dir` never holds half a rendering. `dir` must be absent, empty, or an earlier rendering (replaced whole).
    /// </summary>
    /// <param name="commandLine">The arguments that rendered it, recorded in kustomization.yaml (without --out).</param>
    public static void Write(IReadOnlyList<Manifest> manifests, string dir, string commandLine)
    {
        string target = Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir));
        bool replace = Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any();
        if (replace && !IsRendering(target))
            throw new IOException($"--out = '{dir}': holds files that `oecrun k8s` did not render (no kustomization.yaml starting with its header); choose an empty or new directory");
        if (File.Exists(target)) throw new IOException($"--out = '{dir}': is a file, not a directory");

        string suffix = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));
        string staging = $"{target}.tmp-{suffix}";
        Directory.CreateDirectory(staging);
        try
        {
            foreach (var m in manifests) WriteObject(Path.Combine(staging, m.File), m.Object);
            var kustomization = new Dictionary<string, object>
            {
                ["apiVersion"] = "kustomize.config.k8s.io/v1beta1",
                ["kind"] = "Kustomization",
                ["resources"] = manifests.Select(m => m.File).ToArray(),
            };
            File.WriteAllText(Path.Combine(staging, "kustomization.yaml"),
                $"{Header}\n{CommandPrefix}{commandLine}\n{Yaml(kustomization)}");
            if (Directory.Exists(target))
            {
                string old = $"{target}.old-{suffix}";
                Directory.Move(target, old);
                Directory.Move(staging, target);
                Directory.Delete(old, recursive: true);
            }
            else Directory.Move(staging, target);
        }
        catch
        {
            if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
            throw;
        }
    }

    // A Secret holds the job token: readable by its owner alone from the moment it exists (0600), never 0644 first.
    static void WriteObject(string path, object value)
    {
        var mode = value is k8s.Models.V1Secret ? UnixFileMode.UserRead | UnixFileMode.UserWrite
            : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = mode;
        using var file = new StreamWriter(new FileStream(path, options));
        file.Write(Yaml(value));
    }

    static bool IsRendering(string dir)
    {
        string kustomization = Path.Combine(dir, "kustomization.yaml");
        return File.Exists(kustomization) && File.ReadLines(kustomization).FirstOrDefault() == Header;
    }

    /// <summary>Arguments as a shell would need them typed: single-quoted when they hold anything but plain characters.</summary>
    public static string Quote(IEnumerable<string> args) => string.Join(' ', args.Select(a =>
        a.Length > 0 && a.All(c => char.IsAsciiLetterOrDigit(c) || "-_./=:@%+,".Contains(c)) ? a : $"'{a.Replace("'", "'\\''")}'"));
}
