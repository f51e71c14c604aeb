// Where and how the rank pods are scheduled: Kueue's queue, node selector, tolerations, one pod per node or spread, each
// parsed from `oecrun k8s`'s options into the client's models with a refusal that names the option and value.
using System.Text.RegularExpressions;
using k8s.Models;

namespace OecRun.Kubernetes;

public static partial class PodPlacement
{
    /// <summary>The label that puts a Job in a Kueue LocalQueue: Kueue admits all its pods at once, or none.</summary>
    public const string QueueLabel = "kueue.x-k8s.io/queue-name";
    /// <summary>The node label that names a node (one rank pod per value) and that the soft spread balances over.</summary>
    public const string HostnameKey = "kubernetes.io/hostname";
    /// <summary>--pod-spread: node = at most one rank pod per node (required anti-affinity), soft = spread over nodes when
    /// the scheduler can (topology spread, skew 1, ScheduleAnyway), none = wherever the scheduler puts them.</summary>
    public static readonly string[] Spreads = ["node", "soft", "none"];
    static readonly string[] Effects = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

    /// <summary>--pod-spread's value: given, else node for a GPU job (each pod holds a node's GPUs; two on one node would
    /// share its NICs) and soft for a CPU job.</summary>
    public static string Spread(ManifestOptions o) => o.PodSpread ?? (o.GpusPerRank > 0 ? "node" : "soft");

    /// <summary>--node-selector key=value options as a node selector; null when none.</summary>
    public static Dictionary<string, string>? NodeSelector(ManifestOptions o)
    {
        if (o.NodeSelector.Count == 0) return null;
        var selector = new Dictionary<string, string>();
        foreach (string item in o.NodeSelector)
        {
            var m = KeyValue().Match(item);
            if (!m.Success || !LabelKey(m.Groups[1].Value) || !LabelValue().IsMatch(m.Groups[2].Value))
                throw new ArgumentException($"--node-selector = '{item}': expected key=value with a Kubernetes label key and value, e.g. nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3");
            selector[m.Groups[1].Value] = m.Groups[2].Value;
        }
        return selector;
    }

    /// <summary>--toleration options, kubectl taint's syntax key[=value][:effect] (no value: any value of the key; no
    /// effect: every effect), after the toleration of nvidia.com/gpu that a GPU job always has.</summary>
    public static List<V1Toleration>? Tolerations(ManifestOptions o)
    {
        var tolerations = o.GpusPerRank > 0 ? new List<V1Toleration> { new() { Key = "nvidia.com/gpu", OperatorProperty = "Exists", Effect = "NoSchedule" } } : [];
        foreach (string item in o.Tolerations)
        {
            var m = Toleration().Match(item);
            if (!m.Success || !LabelKey(m.Groups[1].Value) || (m.Groups[3].Success && !Effects.Contains(m.Groups[3].Value)))
                throw new ArgumentException($"--toleration = '{item}': expected key[=value][:effect] with effect {string.Join(", ", Effects)}, e.g. dedicated=training:NoSchedule");
            tolerations.Add(new V1Toleration
            {
                Key = m.Groups[1].Value, OperatorProperty = m.Groups[2].Success ? "Equal" : "Exists",
                Value = m.Groups[2].Success ? m.Groups[2].Value : null, Effect = m.Groups[3].Success ? m.Groups[3].Value : null,
            });
        }
        return tolerations.Count > 0 ? tolerations : null;
    }

    /// <summary>One rank pod per node: no two pods of this job's ranks on one host name.</summary>
    public static V1Affinity? Affinity(ManifestOptions o, IDictionary<string, string> rankLabels) => Spread(o) != "node" ? null : new V1Affinity
    {
        PodAntiAffinity = new V1PodAntiAffinity
        {
            RequiredDuringSchedulingIgnoredDuringExecution =
            [
                new V1PodAffinityTerm { TopologyKey = HostnameKey, LabelSelector = new V1LabelSelector { MatchLabels = rankLabels } },
            ],
        },
    };

    /// <summary>The rank pods spread over nodes as evenly as the scheduler can, never left pending for it.</summary>
    public static List<V1TopologySpreadConstraint>? TopologySpread(ManifestOptions o, IDictionary<string, string> rankLabels) => Spread(o) != "soft" ? null :
    [
        new V1TopologySpreadConstraint
        {
            MaxSkew = 1, TopologyKey = HostnameKey, WhenUnsatisfiable = "ScheduleAnyway", LabelSelector = new V1LabelSelector { MatchLabels = rankLabels },
        },
    ];

    /// <summary>--image-pull-secret names as the pod's references; null when none.</summary>
    public static List<V1LocalObjectReference>? ImagePullSecrets(ManifestOptions o) =>
        o.ImagePullSecrets.Count == 0 ? null : [.. o.ImagePullSecrets.Select(name => new V1LocalObjectReference { Name = name })];

    /// <summary>Refuses what the API server would: each option parsed, the queue a label value, the spread one of <see cref="Spreads"/>.</summary>
    public static void Validate(ManifestOptions o)
    {
        NodeSelector(o);
        Tolerations(o);
        if (o.PodSpread is not null && !Spreads.Contains(o.PodSpread))
            throw new ArgumentException($"--pod-spread = '{o.PodSpread}': expected {string.Join(", ", Spreads)}");
        if (o.Queue is not null && (o.Queue.Length == 0 || !LabelValue().IsMatch(o.Queue)))
            throw new ArgumentException($"--queue = '{o.Queue}': must be a LocalQueue's name that fits a label value (at most 63 letters, digits, '-', '_' or '.')");
        if (o.TtlSecondsAfterFinished is < 0) throw new ArgumentException($"--ttl-seconds-after-finished = {o.TtlSecondsAfterFinished}: must be >= 0");
        if (o.ActiveDeadlineSeconds is < 1) throw new ArgumentException($"--active-deadline-seconds = {o.ActiveDeadlineSeconds}: must be >= 1");
    }

    // A label key: an optional DNS subdomain prefix and '/', then a name of at most 63 characters.
    static bool LabelKey(string key)
    {
        int slash = key.LastIndexOf('/');
        string prefix = slash < 0 ? "" : key[..slash], name = key[(slash + 1)..];
        return (slash < 0 || (prefix.Length is > 0 and <= 253 && ManifestOptions.Dns1123Subdomain().IsMatch(prefix))) && name.Length > 0 && LabelValue().IsMatch(name);
    }

    [GeneratedRegex("^([^=]+)=(.*)$")]
    private static partial Regex KeyValue();

    [GeneratedRegex("^([^=:]+)(?:=([^:]*))?(?::(.+))?$")]
    private static partial Regex Toleration();

    // A label value (may be empty): at most 63 characters, alphanumerics at both ends, '-', '_', '.' between.
    [GeneratedRegex("^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")]
    private static partial Regex LabelValue();
}
