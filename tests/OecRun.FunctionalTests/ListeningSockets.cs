// The TCP addresses a process listens on, read from /proc (Linux): its socket inodes matched against its
// network namespace's /proc/<pid>/net/tcp and tcp6 tables.
using System.Diagnostics;
using System.Globalization;
using System.Net;

namespace OecRun.FunctionalTests;

internal static class ListeningSockets
{
    private const string Listen = "0A"; // TCP_LISTEN in the st column

    /// <summary>Waits until <paramref name="process"/> listens on at least <paramref name="count"/> sockets and returns
    /// their addresses; fails when it exits first or <paramref name="timeout"/> passes.</summary>
    public static async Task<IReadOnlyList<IPEndPoint>> WaitFor(Process process, int count, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var listening = Of(process.Id);
            if (listening.Count >= count) return listening;
            if (process.HasExited) Assert.Fail($"process {process.Id} exited with {process.ExitCode} while listening on {listening.Count} of {count} sockets");
            if (DateTime.UtcNow > deadline) Assert.Fail($"process {process.Id} listens on {listening.Count} of {count} sockets after {timeout.TotalSeconds} s");
            await Task.Delay(TimeSpan.FromMilliseconds(50)); // the polling interval; the deadline bounds the wait
        }
    }

    /// <summary>The local addresses of the TCP sockets in state LISTEN that process <paramref name="pid"/> holds;
    /// none once it has exited.</summary>
    public static IReadOnlyList<IPEndPoint> Of(int pid)
    {
        try
        {
            var inodes = SocketInodes(pid);
            return new[] { "tcp", "tcp6" }.SelectMany(table => Rows($"/proc/{pid}/net/{table}"))
                .Where(row => row.State == Listen && inodes.Contains(row.Inode)).Select(row => row.Local).ToList();
        }
        catch (IOException) // DirectoryNotFoundException, FileNotFoundException: the process has ended
        {
            return [];
        }
    }

    private static HashSet<string> SocketInodes(int pid)
    {
        var inodes = new HashSet<string>();
        foreach (var fd in Directory.EnumerateFiles($"/proc/{pid}/fd"))
        {
            string? target;
            try { target = new FileInfo(fd).LinkTarget; }
            catch (IOException) { continue; } // closed since it was listed
            if (target is ['s', 'o', 'c', 'k', 'e', 't', ':', '[', .. var inode, ']']) inodes.Add(inode);
        }
        return inodes;
    }

    // Columns: sl, local_address (hex address:hex port), rem_address, st, tx_queue:rx_queue, tr:tm->when, retrnsmt, uid, timeout, inode.
    private static IEnumerable<(IPEndPoint Local, string State, string Inode)> Rows(string table) =>
        File.ReadLines(table).Skip(1).Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Select(f => (Endpoint(f[1]), f[3], f[9]));

    // The address is the kernel's in network byte order, printed as 32-bit words of the host's order (little-endian here).
    private static IPEndPoint Endpoint(string hex)
    {
        var (address, port) = (hex[..hex.IndexOf(':')], hex[(hex.IndexOf(':') + 1)..]);
        var bytes = Enumerable.Range(0, address.Length / 8)
            .SelectMany(w => BitConverter.GetBytes(uint.Parse(address.AsSpan(8 * w, 8), NumberStyles.HexNumber))).ToArray();
        return new IPEndPoint(new IPAddress(bytes), int.Parse(port, NumberStyles.HexNumber));
    }
}
