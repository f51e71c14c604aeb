// The all-reduce benchmark of the TCP ring: algbw and busbw per message size, next to raw TCP loopback throughput.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Collectives;
using static TorchSharp.torch;

namespace OecRun.Bench;

/// <summary>
/// nccl-tests definitions: algbw = bytes / time; all-reduce busbw = algbw * 2(n-1)/n, the bandwidth each rank's link
/// carries, comparable across world sizes. Ranks are threads of this process on loopback, each with its own
/// sockets, so the figure includes the kernel's TCP path but not a NIC.
/// </summary>
public static class CollectiveBench
{
    public static void Run(IReadOnlyList<int> worldSizes, IReadOnlyList<long> sizes, TextWriter output)
    {
        const long rawBytes = 256L << 20;
        output.WriteLine($"raw TCP loopback, one stream, {rawBytes >> 20} MB: {RawLoopback(rawBytes) / 1e9:F2} GB/s");
        output.WriteLine();
        output.WriteLine("| ranks | bytes | iterations | time per all-reduce (ms) | algbw (GB/s) | busbw (GB/s) |");
        output.WriteLine("|---|---|---|---|---|---|");
        foreach (int n in worldSizes)
        {
            var seconds = AllReduceTimes(n, sizes);
            foreach (var (bytes, iterations, time) in seconds)
            {
                double algbw = bytes / time;
                output.WriteLine($"| {n} | {Format(bytes)} | {iterations} | {time * 1e3:F3} | {algbw / 1e9:F3} | {algbw * 2 * (n - 1) / n / 1e9:F3} |");
            }
        }
    }

    /// <summary>Per size: (bytes, iterations, seconds per all-reduce) as timed by rank 0 between barriers.</summary>
    static List<(long Bytes, int Iterations, double Seconds)> AllReduceTimes(int worldSize, IReadOnlyList<long> sizes)
    {
        var rendezvous = new InProcessRendezvous();
        var ring = new TcpOptions(TcpOptions.NewToken());
        var results = new List<(long, int, double)>();
        var errors = new Exception?[worldSize];
        var threads = Enumerable.Range(0, worldSize).Select(rank => new Thread(() =>
        {
            try
            {
                using var comm = TcpRingCommunicator.Create(rendezvous, $"bench-{worldSize}", rank, worldSize, ring);
                foreach (long bytes in sizes)
                {
                    using var tensor = ones(bytes / sizeof(float), dtype: ScalarType.Float32);
                    int iterations = (int)Math.Clamp((512L << 20) / Math.Max(bytes, 1), 2, 200); // about 512 MB per size
                    comm.AllReduce(tensor);                                                     // warm-up
                    comm.Barrier();
                    var clock = Stopwatch.StartNew();
                    for (int i = 0; i < iterations; i++) comm.AllReduce(tensor);
                    comm.Barrier();
                    if (rank == 0) results.Add((bytes, iterations, clock.Elapsed.TotalSeconds / iterations));
                }
            }
            catch (Exception e) { errors[rank] = e; }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        var failed = errors.FirstOrDefault(e => e is not null);
        if (failed is not null) throw new CollectiveException($"benchmark at world size {worldSize} failed: {failed.Message}", failed);
        return results;
    }

    /// <summary>Bytes per second of one TCP stream over loopback, 1 MB writes, the same socket options as the ring.</summary>
    static double RawLoopback(long bytes)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        using var client = new TcpClient { NoDelay = true };
        client.Connect(IPAddress.Loopback, ((IPEndPoint)listener.LocalEndpoint).Port);
        using var server = listener.AcceptTcpClient();
        var buffer = new byte[1 << 20];
        var clock = Stopwatch.StartNew();
        var sender = new Thread(() =>
        {
            using var stream = client.GetStream();
            for (long sent = 0; sent < bytes; sent += buffer.Length) stream.Write(buffer);
        });
        sender.Start();
        var receive = new byte[1 << 20];
        using var input = server.GetStream();
        for (long received = 0; received < bytes;)
        {
            int n = input.Read(receive);
            if (n == 0) throw new IOException($"loopback stream closed after {received} of {bytes} bytes");
            received += n;
        }
        sender.Join();
        return bytes / clock.Elapsed.TotalSeconds;
    }

    static string Format(long bytes) => bytes >= 1 << 20 ? $"{bytes >> 20} MB" : $"{bytes >> 10} KB";
}
