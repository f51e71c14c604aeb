// Machines on one host for multi-node fault tests: a Linux bridge and one network namespace per node, each joined to
// the bridge by a veth pair and given its own address on 10.77.N.0/24. Needs root and iproute2; tells why not otherwise.
using System.Diagnostics;

namespace OecRun.FunctionalTests.Faults;

public sealed class NetworkNamespaces : IDisposable
{
    readonly string bridge;
    readonly List<string> namespaces = [];
    readonly string prefix;
    static int made;

    NetworkNamespaces(string prefix, string subnet)
    {
        (this.prefix, Subnet) = (prefix, subnet);
        bridge = $"{prefix}br";
    }

    /// <summary>The first three octets of the nodes' addresses.</summary>
    public string Subnet { get; }

    public IReadOnlyList<Node> Nodes { get; private set; } = [];

    /// <summary>Why namespaces cannot be made here (not root, no `ip`, no permission), or null when they can.</summary>
    public static string? Unavailable()
    {
        if (!OperatingSystem.IsLinux()) return "network namespaces are Linux's";
        if (Environment.UserName != "root") return $"creating network namespaces needs root (running as {Environment.UserName})";
        if (!File.Exists("/usr/sbin/ip") && !File.Exists("/sbin/ip") && !File.Exists("/usr/bin/ip")) return "iproute2's `ip` is not installed";
        string probe = $"oecprobe{Environment.ProcessId % 100000}";
        var (code, error) = Ip("netns", "add", probe);
        if (code != 0) return $"`ip netns add` failed here: {error.Trim()}";
        Ip("netns", "del", probe);
        return null;
    }

    /// <summary>Makes <paramref name="count"/> nodes named by this process and a bridge between them.</summary>
    public static NetworkNamespaces Create(int count)
    {
        int id = Interlocked.Increment(ref made); // names and addresses of its own: the kernel frees a deleted one's later
        var net = new NetworkNamespaces($"oec{Environment.ProcessId % 10000}x{id}", $"10.77.{(Environment.ProcessId + id) % 250}");
        try
        {
            net.Run("link", "add", net.bridge, "type", "bridge");
            net.Run("link", "set", net.bridge, "up");
            var nodes = new List<Node>();
            for (int i = 0; i < count; i++)
            {
                string ns = $"{net.prefix}n{i}", host = $"{net.prefix}h{i}", address = $"{net.Subnet}.{10 + i}";
                net.Run("netns", "add", ns);
                net.namespaces.Add(ns);
                net.Run("link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns);
                net.Run("link", "set", host, "master", net.bridge);
                net.Run("link", "set", host, "up");
                net.Run("-n", ns, "addr", "add", $"{address}/24", "dev", "eth0");
                net.Run("-n", ns, "link", "set", "eth0", "up");
                net.Run("-n", ns, "link", "set", "lo", "up");
                nodes.Add(new Node(ns, address));
            }
            net.Nodes = nodes;
            return net;
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    /// <summary>Cuts node <paramref name="index"/> off the bridge (its link down: every packet to or from it is lost).</summary>
    public void Partition(int index) => Run("link", "set", $"{prefix}h{index}", "down");

    /// <summary>Joins node <paramref name="index"/> to the bridge again.</summary>
    public void Heal(int index) => Run("link", "set", $"{prefix}h{index}", "up");

    /// <summary>Adds `tc netem` delay and loss on node <paramref name="index"/>'s link; null when the kernel has no netem.</summary>
    public string? Impair(int index, string netem)
    {
        var (code, error) = Exec("tc", ["qdisc", "add", "dev", $"{prefix}h{index}", "root", "netem", .. netem.Split(' ')]);
        return code == 0 ? null : $"`tc qdisc add ... netem {netem}` failed here: {error.Trim()}";
    }

    void Run(params string[] args)
    {
        var (code, error) = Ip(args);
        if (code != 0) throw new InvalidOperationException($"ip {string.Join(' ', args)}: exit {code}: {error.Trim()}");
    }

    static (int Code, string Error) Ip(params string[] args) => Exec("ip", args);

    static (int Code, string Error) Exec(string program, string[] args)
    {
        var info = new ProcessStartInfo(program) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var p = Process.Start(info)!;
        string error = p.StandardError.ReadToEnd();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, error);
    }

    public void Dispose()
    {
        for (int i = 0; i < namespaces.Count; i++)
        {
            Ip("link", "del", $"{prefix}h{i}"); // the veth pair, both ends
            Ip("netns", "del", namespaces[i]);
        }
        Ip("link", "del", bridge);
    }
}
