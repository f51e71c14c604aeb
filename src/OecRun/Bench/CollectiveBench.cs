// The TCP ring benchmark: all-reduce, reduce-scatter and all-gather (algbw, busbw) next to raw TCP loopback throughput.
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Collectives;
using static TorchSharp.torch;

namespace OecRun.Bench;

/// <summary>
/// nccl-tests definitions: bytes = the all-reduce tensor, the reduce-scatter input, the all-gather output;
/// algbw = bytes / time; busbw = algbw * 2(n-1)/n (all-reduce) or (n-1)/n (the other two), the bandwidth each rank's
/// link carries, comparable across world sizes and with a raw stream. Ranks are threads of this process on loopback,
/// each with its own sockets, so the figure includes the kernel's TCP path but not a NIC. Baselines: one raw stream
/// alone, writing and reading one 1 MB buffer (cache-resident); and n raw streams at once in a ring (the bytes an
/// n-rank ring moves through this host's cores, with nothing else done), from the 1 MB buffer and, like the ring's
/// tensors, from one 256 MB buffer into another (memory to memory). CPU: the process's core-seconds (all ranks, user + kernel) per GB that crosses links (busbw's
/// bytes, summed over the links), which a loaded machine changes far less than the wall-clock figures: the ring's
/// ceiling on a machine whose cores bind it is the raw streams' GB/s x their CPU per GB / the ring's.
/// </summary>
public static class CollectiveBench
{
    /// <summary>A benchmarked collective: its busbw factor for n ranks, and a call on float32 tensors of a size.</summary>
    private sealed record Op(string Name, Func<int, double> BusFactor, Func<ICommunicator, long, (Action Run, Tensor[] Tensors)> Prepare);

    private const long RawBytes = 256L << 20;

    private static readonly Op[] Ops =
    [
        new("all-reduce", n => 2.0 * (n - 1) / n, (comm, elements) =>
        {
            var t = ones(elements);
            return (() => comm.AllReduce(t), [t]);
        }),
        new("reduce-scatter", n => (n - 1.0) / n, (comm, elements) =>
        {
            var (input, output) = (ones(elements), empty(elements / comm.WorldSize));
            return (() => comm.ReduceScatter(input, output), [input, output]);
        }),
        new("all-gather", n => (n - 1.0) / n, (comm, elements) =>
        {
            var (input, output) = (ones(elements / comm.WorldSize), empty(elements));
            return (() => comm.AllGather(input, output), [input, output]);
        }),
    ];

    /// <summary>segmentBytes: the ring's <see cref="TcpOptions.ChunkBytes"/>.</summary>
    public static void Run(IReadOnlyList<int> worldSizes, IReadOnlyList<long> sizes, TextWriter output, int segmentBytes = 1 << 20)
    {
        var (single, singleCpu) = RawLoopback(1, RawBytes, 1 << 20);
        output.WriteLine($"raw TCP loopback, one stream, {RawBytes >> 20} MB: {single / 1e9:F2} GB/s, CPU {singleCpu:F2} core-s per GB");
        var ring = new Dictionary<int, double>();
        foreach (int n in worldSizes)
        foreach (long buffer in new[] { 1L << 20, RawBytes })
        {
            var (perStream, cpu) = RawLoopback(n, RawBytes, buffer);
            if (buffer == RawBytes) ring[n] = perStream;
            output.WriteLine($"raw TCP loopback, {n} streams at once (a ring of {n}), {RawBytes >> 20} MB each, "
                + $"{(buffer == RawBytes ? "memory to memory" : "1 MB buffer")}: {perStream / 1e9:F2} GB/s per stream, CPU {cpu:F2} core-s per GB");
        }
        output.WriteLine($"ring segment: {Format(segmentBytes)}");
        output.WriteLine();
        output.WriteLine("| op | ranks | bytes | iterations | time (ms) | algbw (GB/s) | busbw (GB/s) | busbw / one stream | busbw / n streams memory to memory | CPU (core-s per GB) |");
        output.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var op in Ops)
        foreach (int n in worldSizes)
        foreach (var (bytes, iterations, time, cpu) in Times(op, n, sizes, segmentBytes))
        {
            double algbw = bytes / time, busbw = algbw * op.BusFactor(n);
            output.WriteLine($"| {op.Name} | {n} | {Format(bytes)} | {iterations} | {time * 1e3:F3} | {algbw / 1e9:F3} | {busbw / 1e9:F3} "
                + $"| {100 * busbw / single:F0}% | {100 * busbw / ring[n]:F0}% | {cpu / (busbw * n * time / 1e9):F2} |");
        }
    }

    /// <summary>Per size: (bytes, iterations, seconds per call, the process's CPU seconds per call) as timed by rank 0
    /// between barriers. Sizes round down to a multiple of 4n bytes, so that the tensors split evenly over the ranks.</summary>
    private static List<(long Bytes, int Iterations, double Seconds, double Cpu)> Times(Op op, int worldSize, IReadOnlyList<long> sizes, int segmentBytes)
    {
        var rendezvous = new InProcessRendezvous();
        var ring = new TcpOptions(TcpOptions.NewToken(), ChunkBytes: segmentBytes);
        var results = new List<(long, int, double, double)>();
        var errors = new Exception?[worldSize];
        var threads = Enumerable.Range(0, worldSize).Select(rank => new Thread(() =>
        {
            try
            {
                using var comm = TcpRingCommunicator.Create(rendezvous, $"bench-{op.Name}-{worldSize}", rank, worldSize, ring);
                foreach (long size in sizes)
                {
                    long elements = size / sizeof(float) / worldSize * worldSize, bytes = elements * sizeof(float);
                    var (run, tensors) = op.Prepare(comm, elements);
                    int iterations = (int)Math.Clamp((512L << 20) / Math.Max(bytes, 1), 2, 200); // about 512 MB per size
                    run();                                                                       // warm-up
                    comm.Barrier();
                    var (clock, cpu) = (Stopwatch.StartNew(), CpuSeconds());
                    for (int i = 0; i < iterations; i++) run();
                    comm.Barrier();
                    if (rank == 0) results.Add((bytes, iterations, clock.Elapsed.TotalSeconds / iterations, (CpuSeconds() - cpu) / iterations));
                    foreach (var t in tensors) t.Dispose();
                }
            }
            catch (Exception e) { errors[rank] = e; }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        var failed = errors.FirstOrDefault(e => e is not null);
        if (failed is not null) throw new CollectiveException($"{op.Name} benchmark at world size {worldSize} failed: {failed.Message}", failed);
        return results;
    }

    /// <summary>Bytes per second of each of <paramref name="streams"/> TCP streams over loopback running at once, 1 MB
    /// writes and reads that walk a buffer of <paramref name="bufferBytes"/> (allocated and touched before the clock
    /// starts), the ring's socket options; each stream has a sending and a receiving thread, like a ring link. Also the
    /// process's CPU seconds per GB carried (over all streams).</summary>
    private static (double PerStream, double Cpu) RawLoopback(int streams, long bytes, long bufferBytes)
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var port = ((IPEndPoint)listener.LocalEndpoint).Port;
        var pairs = Enumerable.Range(0, streams).Select(_ =>
        {
            var client = new TcpClient { NoDelay = true, SendBufferSize = 4 << 20 };
            client.Connect(IPAddress.Loopback, port);
            var server = listener.AcceptTcpClient();
            server.ReceiveBufferSize = 4 << 20;
            return (client, server);
        }).ToArray();
        try
        {
            var buffers = pairs.Select(_ => (Out: Touched(bufferBytes), In: Touched(bufferBytes))).ToArray();
            var (clock, cpu) = (Stopwatch.StartNew(), CpuSeconds());
            var threads = pairs.Zip(buffers).SelectMany(x => new[]
                { new Thread(() => Write(x.First.client, x.Second.Out, bytes)), new Thread(() => Read(x.First.server, x.Second.In, bytes)) }).ToArray();
            foreach (var t in threads) t.Start();
            foreach (var t in threads) t.Join();
            return (bytes / clock.Elapsed.TotalSeconds, (CpuSeconds() - cpu) / (streams * bytes / 1e9));
        }
        finally
        {
            foreach (var (client, server) in pairs) { client.Dispose(); server.Dispose(); }
        }
    }

    private static double CpuSeconds() => Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;

    private static byte[] Touched(long bytes)
    {
        var buffer = new byte[bytes];
        Array.Fill(buffer, (byte)1);
        return buffer;
    }

    // Writes `bytes` in 1 MB pieces, walking the buffer round.
    private static void Write(TcpClient client, byte[] buffer, long bytes)
    {
        var stream = client.GetStream();
        for (long sent = 0; sent < bytes; sent += 1 << 20) stream.Write(buffer.AsSpan((int)(sent % buffer.Length), 1 << 20));
    }

    // Reads `bytes` in pieces of at most 1 MB, walking the buffer round.
    private static void Read(TcpClient server, byte[] buffer, long bytes)
    {
        var stream = server.GetStream();
        for (long received = 0; received < bytes;)
        {
            int at = (int)(received % buffer.Length), n = stream.Read(buffer.AsSpan(at, Math.Min(1 << 20, buffer.Length - at)));
            if (n == 0) throw new IOException($"loopback stream closed after {received} of {bytes} bytes");
            received += n;
        }
    }

    private static string Format(long bytes) => bytes >= 1 << 20 ? $"{bytes / 1048576.0:0.##} MB" : $"{bytes / 1024.0:0.##} KB";
}
