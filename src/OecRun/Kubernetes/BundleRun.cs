// Running the published bundle (build/publish-bundle.sh) from the shared volume in a stock image instead of an oecrun
// image: the containers' command and the environment such an image lacks.
using k8s.Models;

namespace OecRun.Kubernetes;

public static class BundleRun
{
    /// <summary>Checks --bundle and --libtorch; throws naming the option and value.</summary>
    public static void Validate(ManifestOptions o)
    {
        string shared = JobManifests.SharedMount + "/";
        if (o.Bundle is { } dir && (!dir.StartsWith(shared, StringComparison.Ordinal) || dir.Length == shared.Length || dir.Any(char.IsWhiteSpace)
                                    || dir.Split('/').Any(part => part is "." or "..")))
            throw new ArgumentException($"--bundle = '{dir}': must be the unpacked bundle's directory on the shared volume, an absolute path under {shared} " +
                                        "without spaces, . or .., e.g. /shared/oec/oecrun-linux-x64");
        if (o.LibTorch is { } lib && lib != "python" && !lib.StartsWith('/'))
            throw new ArgumentException($"--libtorch = '{lib}': expected python (the image's PyTorch) or an absolute path to a libtorch lib directory");
    }

    /// <summary>The containers' command: the bundle's oecrun, or null for the image's entrypoint.</summary>
    public static List<string>? Command(ManifestOptions o) => o.Bundle is null ? null : [$"{o.Bundle.TrimEnd('/')}/oecrun"];

    /// <summary>HOME=/tmp in a stock image, where the pods' user (1000) has no home but CUDA's kernel cache and Python
    /// want a writable one; in rank pods also OEC_LIBTORCH, the libtorch a bundle without one loads.</summary>
    public static IEnumerable<V1EnvVar> Env(ManifestOptions o, bool rank)
    {
        if (o.Bundle is not null) yield return new() { Name = "HOME", Value = "/tmp" };
        if (rank && o.LibTorch is not null) yield return new() { Name = Rank.ExternalLibTorch.Variable, Value = o.LibTorch };
    }
}
