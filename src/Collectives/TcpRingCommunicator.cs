// The TCP ring communicator: collectives as pipelined ring passes over two sockets per rank, and failure attribution.
using System.Buffers.Binary;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

public sealed class TcpRingCommunicator : ICommunicator
{
    private enum Opcode { AllReduce = 1, Broadcast, AllGather, ReduceScatter }

    private const int HeaderBytes = 16; // int32 opcode, int32 sequence number, int64 payload bytes (little-endian)

    private readonly IRendezvous _rendezvous;
    private readonly string _groupKey;
    private readonly TcpOptions _options;
    private readonly RingLinks? _links;        // null at world size 1
    private readonly Worker? _sender;
    private readonly object _failGate = new();
    private readonly object _queueGate = new();
    private Worker? _queue;                    // runs AllReduceAsync calls in call order; started by the first
    private Job? _lastQueued;                  // the latest of them; synchronous operations wait for it first
    private volatile bool _disposed;
    private string? _broken;                   // the failure message once an operation failed
    private Progress? _active;                 // the progress of the operation in flight, to abort it
    private int _sequence;                     // operations run so far; checked against the previous rank's
    private int _splits;                       // Split calls so far; names the derived groups

    public int Rank { get; }
    public int WorldSize { get; }

    private TcpRingCommunicator(IRendezvous rendezvous, string groupKey, int rank, int worldSize, TcpOptions options, RingLinks? links)
    {
        (_rendezvous, _groupKey, Rank, WorldSize, _options, _links) = (rendezvous, groupKey, rank, worldSize, options, links);
        if (links is not null) _sender = new Worker($"ring-send {groupKey} r{rank}");
    }

    /// <summary>Listens, exchanges endpoints through the rendezvous under "{groupKey}/endpoints", connects the ring.
    /// Collective: all worldSize ranks call it with the same groupKey (unique per group and lifetime of the rendezvous).</summary>
    public static TcpRingCommunicator Create(IRendezvous rendezvous, string groupKey, int rank, int worldSize, TcpOptions options)
    {
        ArgumentNullException.ThrowIfNull(rendezvous);
        if (worldSize < 1 || rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), $"group '{groupKey}': rank {rank} outside world size {worldSize}");
        if (options.ChunkBytes < 64)
            throw new ArgumentOutOfRangeException(nameof(options), $"ChunkBytes {options.ChunkBytes} < 64");
        var links = worldSize == 1 ? null : RingLinks.Open(rendezvous, groupKey, rank, worldSize, options);
        return new TcpRingCommunicator(rendezvous, groupKey, rank, worldSize, options, links);
    }

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        TensorMemory.Check(tensor, nameof(tensor), Rank);
        Drain();
        RunAllReduce(tensor, op);
    }

    /// <summary>Queues the all-reduce on this communicator's async worker and returns. Wait fails, and breaks the
    /// communicator, when the queue finishes no operation for <see cref="TcpOptions.EffectiveTimeout"/> plus a grace
    /// of min(1 s, timeout/4), so that the ring's own timeout, which names the stalled peer, fires first.</summary>
    public IPendingCollective AllReduceAsync(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        TensorMemory.Check(tensor, nameof(tensor), Rank);
        ObjectDisposedException.ThrowIf(_disposed, this);
        lock (_queueGate)
        {
            _queue ??= new Worker($"ring-async {_groupKey} r{Rank}");
            return new Pending(this, _lastQueued = _queue.Post(() => RunAllReduce(tensor, op)));
        }
    }

    private void RunAllReduce(Tensor tensor, ReduceOp op)
    {
        using var _ = torch.no_grad();
        using var flat = tensor.view(-1);
        if (WorldSize > 1)
            Execute(Opcode.AllReduce, flat, RingPlan.Balanced(flat.numel(), WorldSize), RingPlan.AllReduce(Rank, WorldSize), op);
        if (op == ReduceOp.Average) TensorMemory.DivideBy(flat, WorldSize);
    }

    public void Broadcast(Tensor tensor, int root)
    {
        TensorMemory.Check(tensor, nameof(tensor), Rank);
        if (root < 0 || root >= WorldSize)
            throw new ArgumentOutOfRangeException(nameof(root), $"rank {Rank}: broadcast root {root} outside world size {WorldSize}");
        Drain();
        if (WorldSize == 1) return;
        using var _ = torch.no_grad();
        using var flat = tensor.view(-1);
        Execute(Opcode.Broadcast, flat, RingPlan.Whole(flat.numel()), RingPlan.Broadcast(Rank, root, WorldSize), ReduceOp.Sum);
    }

    public void AllGather(Tensor input, Tensor output)
    {
        CheckPair(input, output, output.numel(), input.numel(), "output.numel must be world * input.numel");
        Drain();
        using var _ = torch.no_grad();
        using var flat = output.view(-1);
        var each = input.numel();
        using (var mine = flat.narrow(0, Rank * each, each)) mine.copy_(input.reshape(-1));
        if (WorldSize > 1)
            Execute(Opcode.AllGather, flat, RingPlan.Equal(each, WorldSize), RingPlan.AllGather(Rank, WorldSize).ToArray(), ReduceOp.Sum);
    }

    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        CheckPair(output, input, input.numel(), output.numel(), "input.numel must be world * output.numel");
        Drain();
        using var _ = torch.no_grad();
        var each = output.numel();
        using var work = input.reshape(-1).clone(); // the ring reduces in place; the caller's input stays as it was
        if (WorldSize > 1)
            Execute(Opcode.ReduceScatter, work, RingPlan.Equal(each, WorldSize), RingPlan.ReduceScatter(Rank, WorldSize).ToArray(), op);
        using var outFlat = output.view(-1);
        using (var mine = work.narrow(0, Rank * each, each)) outFlat.copy_(mine);
        if (op == ReduceOp.Average) TensorMemory.DivideBy(outFlat, WorldSize);
    }

    /// <summary>Returns once every rank of the group has entered (an all-reduce of one int32).</summary>
    public void Barrier()
    {
        using var token = torch.zeros(1, ScalarType.Int32);
        AllReduce(token);
    }

    public ICommunicator Split(int color, int key)
    {
        var all = ExchangeColorKey(color, key);
        var members = Enumerable.Range(0, WorldSize).Where(r => all[2 * r] == color)
            .OrderBy(r => all[2 * r + 1]).ThenBy(r => r).ToArray();
        var groupKey = $"{_groupKey}/split{_splits++}/color{color}";
        return Create(_rendezvous, groupKey, Array.IndexOf(members, Rank), members.Length, _options with { Port = 0 });
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _active?.Abort();
        _links?.Dispose();
        _sender?.Dispose();
        _queue?.Dispose(); // queued all-reduces that did not run yet fail (disposed) and their Wait throws
    }

    public override string ToString() => $"TcpRingCommunicator(group '{_groupKey}', rank {Rank} of {WorldSize})";

    // Synchronous operations run after every queued all-reduce, so all ranks see one order of operations.
    private void Drain()
    {
        Job? last;
        lock (_queueGate) last = _lastQueued;
        if (last is not null) Await(last);
    }

    /// <summary>Waits for a queued job. Gives up when the queue finished no job for a whole timeout plus grace (a
    /// queue of big all-reduces may take longer than one timeout in all): then the communicator breaks.</summary>
    private void Await(Job job)
    {
        var timeout = _options.EffectiveTimeout + TimeSpan.FromMilliseconds(Math.Min(1000, _options.EffectiveTimeout.TotalMilliseconds / 4));
        for (var seen = _queue!.Finished; !job.Wait(timeout); seen = _queue.Finished)
            if (_queue.Finished == seen)
                throw new CollectiveException(Fail("a queued AllReduce",
                    new TimeoutException($"no queued all-reduce finished within {timeout.TotalSeconds:0.###} s")));
    }

    // Wait: the job's failure (already a broken communicator), as a CollectiveException of the waiting thread.
    private sealed class Pending(TcpRingCommunicator c, Job job) : IPendingCollective
    {
        public void Wait()
        {
            c.Await(job);
            if (job.Error is { } e) throw new CollectiveException(e is CollectiveException ? e.Message : $"rank {c.Rank}: queued all-reduce failed: {e.Message}", e);
        }
    }

    // [color0, key0, color1, key1, ...] over the parent group.
    private long[] ExchangeColorKey(int color, int key)
    {
        using var mine = torch.tensor(new long[] { color, key });
        using var all = torch.empty(2L * WorldSize, ScalarType.Int64);
        AllGather(mine, all);
        return all.data<long>().ToArray();
    }

    // small: the tensor whose numel times world must equal big's numel.
    private void CheckPair(Tensor small, Tensor big, long bigNumel, long smallNumel, string rule)
    {
        TensorMemory.Check(small, nameof(small), Rank);
        TensorMemory.Check(big, nameof(big), Rank);
        if (small.dtype != big.dtype)
            throw new ArgumentException($"rank {Rank}: dtypes differ: {small.dtype} and {big.dtype}");
        if (bigNumel != smallNumel * WorldSize)
            throw new ArgumentException($"rank {Rank}: {rule} (world {WorldSize}): got {bigNumel} and {smallNumel}");
    }

    // Runs one ring pass: the send half on the worker thread, the receive half (and the reductions) on this thread.
    private void Execute(Opcode opcode, Tensor flat, Chunk[] chunks, RingStep[] steps, ReduceOp op)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_broken is not null) throw new CollectiveException($"rank {Rank}: communicator is broken by an earlier failure: {_broken}");
        var pass = new RingPass(this, opcode, ++_sequence, flat, chunks, steps, op);
        var progress = _active = new Progress();
        try
        {
            var job = steps.Any(s => s.Send >= 0) ? _sender!.Post(() => pass.SendAll(progress)) : null;
            if (steps.Any(s => s.Recv >= 0)) pass.ReceiveAll(progress);
            if (job is not null) AwaitSend(job, pass.Name);
        }
        catch (Exception e) when (e is not CollectiveException || _broken is null)
        {
            throw new CollectiveException(Fail(pass.Name, e), e);
        }
        catch (CollectiveException e)
        {
            throw new CollectiveException(_broken!, e);
        }
        finally
        {
            _active = null;
        }
    }

    private void AwaitSend(Job job, string name)
    {
        if (!job.Wait(_options.EffectiveTimeout))
            throw new PeerIoException(_links!.Next, _links.NextEndpoint, $"sending to rank {_links.Next} did not finish within {_options.EffectiveTimeout.TotalSeconds:0.###} s", timedOut: true);
        if (job.Error is not null)
            throw new CollectiveException(Fail(name, job.Error), job.Error);
    }

    /// <summary>Marks the communicator broken (once), names the first failure of the group through the rendezvous,
    /// then closes the sockets so the neighbours fail at once instead of at their timeouts. Returns the message.</summary>
    private string Fail(string opName, Exception cause)
    {
        lock (_failGate)
        {
            if (_broken is not null) return _broken;
            if (_disposed) return _broken = $"group '{_groupKey}': rank {Rank} was disposed during {opName}";
            var root = Unwrap(cause);
            if (root is PeerIoException { TimedOut: true } stall) root = BlameStalled(stall);
            var local = root is PeerIoException p
                ? $"rank {p.PeerRank} ({p.PeerEndpoint}) failed: {p.What}; seen by rank {Rank} during {opName}"
                : $"rank {Rank} failed during {opName}: {root.Message}";
            var first = FirstFailure() ?? ReportAndRead(local);
            _broken = first == local ? $"group '{_groupKey}': {local}" : $"group '{_groupKey}': {first} (then rank {Rank} saw: {local})";
            _active?.Abort();
            _links?.Dispose(); // after the report, so a neighbour that sees our EOF finds the original cause
            return _broken;
        }
    }

    /// <summary>A timeout does not prove the silent peer is the culprit: it may itself wait on its own previous rank.
    /// Each timed-out rank records whom it waits on under "{group}/stalled/{rank}"; after a grace period the chain of
    /// waits is followed to the first rank that is not waiting on anyone, which is named.</summary>
    private PeerIoException BlameStalled(PeerIoException stall)
    {
        try
        {
            _rendezvous.ReportFailure($"{_groupKey}/stalled/{Rank}", stall.PeerRank.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Thread.Sleep(TimeSpan.FromMilliseconds(Math.Min(1000, _options.EffectiveTimeout.TotalMilliseconds / 4)));
            var suspect = stall.PeerRank;
            for (var hops = 0; hops < WorldSize; hops++)
            {
                if (!int.TryParse(_rendezvous.Failure($"{_groupKey}/stalled/{suspect}"), out var next) || next == Rank) break;
                suspect = next;
            }
            if (suspect == stall.PeerRank) return stall;
            var endpoint = _links!.Endpoints.ElementAtOrDefault(suspect) ?? "?";
            return new PeerIoException(suspect, endpoint, $"rank {suspect} stalled: rank {Rank} timed out waiting through rank {stall.PeerRank}", stall, true);
        }
        catch (Exception e) when (e is not PeerIoException)
        {
            return stall; // the rendezvous is unreachable: name the direct peer
        }
    }

    private static Exception Unwrap(Exception e) =>
        e is CollectiveException { InnerException: PeerIoException inner } ? inner : e;

    private string? FirstFailure()
    {
        try { return _rendezvous.Failure(_groupKey); }
        catch (Exception) { return null; } // the rendezvous itself may be gone; the local view still names a peer
    }

    private string ReportAndRead(string local)
    {
        try { _rendezvous.ReportFailure(_groupKey, local); }
        catch (Exception) { return local; }
        return FirstFailure() ?? local;
    }

    // One ring operation over a flat tensor: the segment schedule plus the send and receive loops.
    private sealed class RingPass
    {
        private readonly TcpRingCommunicator _c;
        private readonly Opcode _opcode;
        private readonly int _sequence;
        private readonly Tensor _flat;
        private readonly Chunk[] _chunks;
        private readonly RingStep[] _steps;
        private readonly ReduceOp _op;
        private readonly long _segment;      // elements per segment
        private readonly int _elementBytes;
        private readonly long[] _recvBase;   // segments received before step t

        public string Name => $"{_opcode} #{_sequence} ({_flat.numel()} x {_flat.dtype})";

        public RingPass(TcpRingCommunicator c, Opcode opcode, int sequence, Tensor flat, Chunk[] chunks, RingStep[] steps, ReduceOp op)
        {
            (_c, _opcode, _sequence, _flat, _chunks, _steps, _op) = (c, opcode, sequence, flat, chunks, steps, op);
            _elementBytes = TensorMemory.ElementBytes(flat);
            _segment = Math.Max(1, c._options.ChunkBytes / _elementBytes);
            _recvBase = new long[steps.Length + 1];
            for (var t = 0; t < steps.Length; t++)
                _recvBase[t + 1] = _recvBase[t] + (steps[t].Recv >= 0 ? RingPlan.Segments(chunks[steps[t].Recv], _segment) : 0);
        }

        public void SendAll(Progress progress)
        {
            var links = _c._links!;
            links.Send(Header());
            for (var t = 0; t < _steps.Length; t++)
            {
                var send = _steps[t].Send;
                if (send < 0) continue;
                var forwards = t > 0 && _steps[t - 1].Recv == send;
                var chunk = _chunks[send];
                for (long k = 0; k < RingPlan.Segments(chunk, _segment); k++)
                {
                    if (forwards && !progress.WaitFor(_recvBase[t - 1] + k + 1, _c._options.EffectiveTimeout))
                        throw new PeerIoException(links.Prev, links.PrevEndpoint, $"no data from rank {links.Prev} within {_c._options.EffectiveTimeout.TotalSeconds:0.###} s", timedOut: true);
                    links.Send(Bytes(SegmentOf(chunk, k)));
                }
            }
        }

        public void ReceiveAll(Progress progress)
        {
            var links = _c._links!;
            Span<byte> header = stackalloc byte[HeaderBytes];
            links.Receive(header);
            CheckHeader(header);
            using var scratch = _steps.Any(s => s.Reduce && s.Recv >= 0) ? torch.empty(ScratchLength(), _flat.dtype) : null;
            foreach (var step in _steps)
            {
                if (step.Recv < 0) continue;
                var chunk = _chunks[step.Recv];
                for (long k = 0; k < RingPlan.Segments(chunk, _segment); k++)
                {
                    var seg = SegmentOf(chunk, k);
                    if (step.Reduce) ReceiveAndReduce(seg, scratch!);
                    else links.Receive(Bytes(seg));
                    progress.Advance();
                }
            }
        }

        private long ScratchLength() => Math.Max(1, Math.Min(_segment, _chunks.Max(c => c.Count)));

        private void ReceiveAndReduce(Chunk seg, Tensor scratch)
        {
            using var source = scratch.narrow(0, 0, seg.Count);
            _c._links!.Receive(BytesOf(source, seg.Count));
            using var target = _flat.narrow(0, seg.Start, seg.Count);
            TensorMemory.Reduce(target, source, _op);
        }

        private Chunk SegmentOf(Chunk chunk, long k)
        {
            var start = chunk.Start + k * _segment;
            return new Chunk(start, Math.Min(_segment, chunk.Start + chunk.Count - start));
        }

        private unsafe Span<byte> Bytes(Chunk seg) =>
            new((byte*)TensorMemory.Data(_flat) + seg.Start * _elementBytes, checked((int)(seg.Count * _elementBytes)));

        private unsafe Span<byte> BytesOf(Tensor t, long count) =>
            new((byte*)TensorMemory.Data(t), checked((int)(count * _elementBytes)));

        private byte[] Header()
        {
            var h = new byte[HeaderBytes];
            BinaryPrimitives.WriteInt32LittleEndian(h, (int)_opcode);
            BinaryPrimitives.WriteInt32LittleEndian(h.AsSpan(4), _sequence);
            BinaryPrimitives.WriteInt64LittleEndian(h.AsSpan(8), _flat.numel() * _elementBytes);
            return h;
        }

        // The previous rank must be running the same operation on the same number of bytes.
        private void CheckHeader(ReadOnlySpan<byte> h)
        {
            var opcode = (Opcode)BinaryPrimitives.ReadInt32LittleEndian(h);
            var sequence = BinaryPrimitives.ReadInt32LittleEndian(h[4..]);
            var bytes = BinaryPrimitives.ReadInt64LittleEndian(h[8..]);
            var mine = _flat.numel() * _elementBytes;
            if (opcode != _opcode || sequence != _sequence || bytes != mine)
                throw new InvalidOperationException($"mismatched collective: rank {_c._links!.Prev} ({_c._links.PrevEndpoint}) runs {opcode} #{sequence} "
                    + $"on {bytes} bytes, rank {_c.Rank} runs {_opcode} #{_sequence} on {mine} bytes");
        }
    }
}
