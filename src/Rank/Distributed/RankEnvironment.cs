// Where a rank process learns who it is and where its coordinator listens: torchrun's variables, else Slurm's, else ours.
using System.Collections;
using System.Text.RegularExpressions;

namespace Rank.Distributed;

/// <summary>A rank's place in the job as its launcher said it.</summary>
/// <param name="Coordinator">The coordinator's gRPC address, http://host:port.</param>
/// <param name="Rank">The rank to ask for; -1: the coordinator assigns one.</param>
/// <param name="WorldSize">Ranks in the job, checked against job.world_size; 0: not said.</param>
/// <param name="LocalRank">This rank's index on its machine: its GPU (cuda:LOCAL_RANK).</param>
/// <param name="LocalWorldSize">Ranks sharing this machine (and its cores).</param>
/// <param name="Source">Which launcher's variables gave the rank: torchrun, Slurm or none.</param>
public sealed record RankPlacement(Uri Coordinator, int Rank, int WorldSize, int LocalRank, int LocalWorldSize, string Source);

/// <summary>
/// Resolves a rank's placement from its environment, each quantity from the first source that sets it:
/// <list type="number">
/// <item>coordinator: --coordinator, then OEC_COORDINATOR, then http://MASTER_ADDR:MASTER_PORT, then the first host of
/// SLURM_JOB_NODELIST (where `oecrun slurm`'s script starts it) at MASTER_PORT; MASTER_PORT defaults to <see cref="DefaultPort"/>;</item>
/// <item>rank, world size, local rank, local world size: torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE when any
/// of them is set (torchrun, Kubeflow's PyTorchJob, our launchers), else Slurm's SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID
/// and SLURM_NTASKS_PER_NODE (or this node's count in SLURM_TASKS_PER_NODE) when SLURM_PROCID is set. The two are never
/// mixed: torchrun run by srun sets both, and then SLURM_PROCID numbers the torchrun agents, not the ranks;</item>
/// <item>node index (the pod or machine of `rank --local-ranks`): JOB_COMPLETION_INDEX, OEC_POD_INDEX, NODE_RANK, SLURM_NODEID.</item>
/// </list>
/// A rank outside its world (RANK &gt;= WORLD_SIZE) or a local rank outside its machine is refused naming the variables.
/// </summary>
public static partial class RankEnvironment
{
    /// <summary>The coordinator's default gRPC port (`oecrun coordinator --port`), torchrun's default rendezvous port.</summary>
    public const int DefaultPort = 29400;

    /// <summary>This process's environment as a dictionary, the input of <see cref="Resolve"/>.</summary>
    public static IReadOnlyDictionary<string, string> Current() =>
        Environment.GetEnvironmentVariables().Cast<DictionaryEntry>().ToDictionary(e => (string)e.Key, e => (string?)e.Value ?? "");

    public static RankPlacement Resolve(string? coordinatorOption, IReadOnlyDictionary<string, string> env)
    {
        var uri = Coordinator(coordinatorOption, env);
        if (Any(env, "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"))
            return Checked(new RankPlacement(uri, Int(env, "RANK") ?? -1, Int(env, "WORLD_SIZE") ?? 0, Int(env, "LOCAL_RANK") ?? 0,
                Int(env, "LOCAL_WORLD_SIZE") ?? 1, "torchrun"), Any(env, "LOCAL_WORLD_SIZE"), "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE");
        if (Int(env, "SLURM_PROCID") is int procId)
            return Checked(new RankPlacement(uri, procId, Int(env, "SLURM_NTASKS") ?? 0, Int(env, "SLURM_LOCALID") ?? 0,
                SlurmTasksHere(env), "Slurm"), localWorldSaid: true, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE");
        return new RankPlacement(uri, -1, 0, 0, 1, "none");
    }

    /// <summary>The index of this pod or machine among the job's, for `rank --local-ranks`; null when no variable says.</summary>
    public static int? NodeIndex(IReadOnlyDictionary<string, string> env)
    {
        foreach (string name in new[] { "JOB_COMPLETION_INDEX", "OEC_POD_INDEX", "NODE_RANK", "SLURM_NODEID" })
            if (Int(env, name) is int index)
                return index >= 0 ? index : throw new ArgumentException($"{name} = {index}: not a pod or node index >= 0");
        return null;
    }

    /// <summary>The first host of a Slurm host list: "gpu[07-09,12],cpu1" is gpu07, "rack[1-2]-n[3,5]" rack1-n3.</summary>
    public static string FirstHost(string hostList)
    {
        var first = TopLevelItem().Match(hostList).Value;
        string host = Range().Replace(first, m => m.Groups[1].Value);
        bool whole = first.Length == hostList.Length || hostList[first.Length] == ',';
        if (!whole || host.Length == 0 || host.Contains(']'))
            throw new ArgumentException($"SLURM_JOB_NODELIST = '{hostList}': not a Slurm host list such as node[01-04]");
        return host;
    }

    static Uri Coordinator(string? option, IReadOnlyDictionary<string, string> env)
    {
        string address = option ?? Env(env, "OEC_COORDINATOR") ?? (Env(env, "MASTER_ADDR") ?? SlurmFirstHost(env)) switch
        {
            null => throw new ArgumentException("no coordinator address: pass --coordinator or set OEC_COORDINATOR, MASTER_ADDR (with MASTER_PORT) or, under Slurm, SLURM_JOB_NODELIST"),
            string host => $"http://{(host.Contains(':') ? $"[{host}]" : host)}:{Port(env)}",
        };
        if (!Uri.TryCreate(address, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new ArgumentException($"coordinator address '{address}': expected http://host:port");
        return uri;
    }

    static string? SlurmFirstHost(IReadOnlyDictionary<string, string> env) => Env(env, "SLURM_JOB_NODELIST") is { } list ? FirstHost(list) : null;

    static int Port(IReadOnlyDictionary<string, string> env) => Int(env, "MASTER_PORT") switch
    {
        null => DefaultPort,
        int p and >= 1 and <= 65535 => p,
        int p => throw new ArgumentException($"MASTER_PORT = {p}: not a port in [1, 65535]"),
    };

    /// <summary>Ranks on this node: SLURM_NTASKS_PER_NODE (set by --ntasks-per-node), else the SLURM_NODEID-th count of
    /// SLURM_TASKS_PER_NODE ("4(x2),3": 4, 4, 3), else 1.</summary>
    static int SlurmTasksHere(IReadOnlyDictionary<string, string> env)
    {
        if (Int(env, "SLURM_NTASKS_PER_NODE") is int n) return n;
        if (Env(env, "SLURM_TASKS_PER_NODE") is not { } list) return 1;
        var counts = new List<int>();
        foreach (var item in list.Split(','))
        {
            var m = TaskCount().Match(item);
            if (!m.Success) throw new ArgumentException($"SLURM_TASKS_PER_NODE = '{list}': expected counts such as 4(x2),3");
            counts.AddRange(Enumerable.Repeat(int.Parse(m.Groups[1].Value), m.Groups[2].Success ? int.Parse(m.Groups[2].Value) : 1));
        }
        int node = Int(env, "SLURM_NODEID") ?? 0;
        return node >= 0 && node < counts.Count ? counts[node]
            : throw new ArgumentException($"SLURM_NODEID = {node}: SLURM_TASKS_PER_NODE = '{list}' counts {counts.Count} nodes");
    }

    /// <summary>Refuses values no launcher gives: negative numbers, a rank outside its world, a local rank outside its
    /// machine (when the launcher said how many ranks the machine has: LOCAL_RANK alone is a GPU index).</summary>
    static RankPlacement Checked(RankPlacement p, bool localWorldSaid, string rank, string world, string localRank, string localWorld)
    {
        bool assigned = p.Rank == -1 && rank == "RANK"; // RANK unset (or -1): the coordinator assigns one
        if (p.Rank < 0 && !assigned) throw new ArgumentException($"{rank} = {p.Rank}: must be >= 0");
        if (p.WorldSize < 0) throw new ArgumentException($"{world} = {p.WorldSize}: must be >= 1");
        if (p.WorldSize > 0 && p.Rank >= p.WorldSize) throw new ArgumentException($"{rank} = {p.Rank} is not below {world} = {p.WorldSize}: ranks are 0..{p.WorldSize - 1}");
        if (p.LocalWorldSize < 1) throw new ArgumentException($"{localWorld} = {p.LocalWorldSize}: must be >= 1");
        if (p.LocalRank < 0 || (localWorldSaid && p.LocalRank >= p.LocalWorldSize))
            throw new ArgumentException($"{localRank} = {p.LocalRank} is not in [0, {localWorld} = {p.LocalWorldSize}): the local rank numbers this machine's ranks");
        return p;
    }

    static bool Any(IReadOnlyDictionary<string, string> env, params string[] names) => names.Any(n => Env(env, n) is not null);

    static string? Env(IReadOnlyDictionary<string, string> env, string name) => env.TryGetValue(name, out var v) && v.Length > 0 ? v : null;

    static int? Int(IReadOnlyDictionary<string, string> env, string name) => Env(env, name) is { } v
        ? int.TryParse(v, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out int n) ? n
            : throw new ArgumentException($"{name} = '{v}': not an integer")
        : null;

    // The first comma-separated item, commas inside [...] included: "a[1-3,5],b" -> "a[1-3,5]".
    [GeneratedRegex(@"^(?:[^,\[]|\[[^\]]*\])+")]
    private static partial Regex TopLevelItem();

    // A bracketed range list and its first number, zero padding kept: "[07-09,12]" -> "07".
    [GeneratedRegex(@"\[(\d+)[^\]]*\]")]
    private static partial Regex Range();

    [GeneratedRegex(@"^(\d+)(?:\(x(\d+)\))?$")]
    private static partial Regex TaskCount();
}
