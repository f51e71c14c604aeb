// The TCP ring communicator: collectives as pipelined ring passes over two sockets per rank, and failure attribution.
using System.Buffers.Binary;
using TorchSharp;
using static TorchSharp.torch;

namespace Collectives;

public sealed class TcpRingCommunicator : ICommunicator
{
    private enum Opcode { AllReduce = 1, Broadcast, AllGather, ReduceScatter }

    private const int HeaderBytes = 16; // int32 opcode, int32 sequence number, int64 payload bytes (little-endian)

    private readonly IRendezvous rendezvous;
    private readonly string groupKey;
    private readonly TcpOptions options;
    private readonly RingLinks? links;        // null at world size 1
    private readonly Worker? sender;
    private readonly object failGate = new();
    private readonly object queueGate = new();
    private Worker? queue;                    // runs AllReduceAsync calls in call order; started by the first
    private Job? lastQueued;                  // the latest of them; synchronous operations wait for it first
    private volatile bool disposed;
    private string? broken;                   // the failure message once an operation failed
    private RingPass? active;                 // the operation in flight, to abort it
    private int sequence;                     // operations run so far; checked against the previous rank's
    private int splits;                       // Split calls so far; names the derived groups

    public int Rank { get; }
    public int WorldSize { get; }

    private TcpRingCommunicator(IRendezvous rendezvous, string groupKey, int rank, int worldSize, TcpOptions options, RingLinks? links)
    {
        (this.rendezvous, this.groupKey, Rank, WorldSize, this.options, this.links) = (rendezvous, groupKey, rank, worldSize, options, links);
        if (links is not null) sender = new Worker($"ring-send {groupKey} r{rank}");
    }

    /// <summary>Listens, exchanges endpoints through the rendezvous under "{groupKey}/endpoints", connects the ring; each
    /// link proves <see cref="TcpOptions.Token"/> both ways, and a peer that does not is refused naming it.
    /// Collective: all worldSize ranks call it with the same groupKey (unique per group and lifetime of the rendezvous).</summary>
    public static TcpRingCommunicator Create(IRendezvous rendezvous, string groupKey, int rank, int worldSize, TcpOptions options)
    {
        ArgumentNullException.ThrowIfNull(rendezvous);
        if (worldSize < 1 || rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), $"group '{groupKey}': rank {rank} outside world size {worldSize}");
        if (options.ChunkBytes < 64)
            throw new ArgumentOutOfRangeException(nameof(options), $"ChunkBytes {options.ChunkBytes} < 64");
        if (options.Token is not { Length: >= TcpOptions.MinTokenLength })
            throw new ArgumentException($"group '{groupKey}': the job token has {options.Token?.Length ?? 0} characters, at least "
                + $"{TcpOptions.MinTokenLength} are needed: every ring connection proves it", nameof(options));
        var links = worldSize == 1 ? null : RingLinks.Open(rendezvous, groupKey, rank, worldSize, options);
        return new TcpRingCommunicator(rendezvous, groupKey, rank, worldSize, options, links);
    }

    public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        TensorMemory.Check(tensor, nameof(tensor), Rank);
        Drain();
        if (WorldSize == 1) return; // every op over one rank leaves the tensor as it is
        using var staged = HostStaging.In(tensor);
        RunAllReduce(staged.Host, op);
        staged.Out();
    }

    /// <summary>Queues the all-reduce on this communicator's async worker and returns. Wait fails, and breaks the
    /// communicator, when the queue finishes no operation for <see cref="TcpOptions.EffectiveTimeout"/> plus a grace
    /// of min(1 s, timeout/4), so that the ring's own timeout, which names the stalled peer, fires first. A CUDA
    /// tensor is copied to the host here, on the caller's thread and stream, and back in Wait.</summary>
    public IPendingCollective AllReduceAsync(Tensor tensor, ReduceOp op = ReduceOp.Sum)
    {
        TensorMemory.Check(tensor, nameof(tensor), Rank);
        ObjectDisposedException.ThrowIf(disposed, this);
        if (WorldSize == 1) return PendingCollective.Done;
        var staged = HostStaging.In(tensor);
        lock (queueGate)
        {
            queue ??= new Worker($"ring-async {groupKey} r{Rank}");
            return new Pending(this, lastQueued = queue.Post(() => RunAllReduce(staged.Host, op)), staged);
        }
    }

    // flat: 1-D host memory; world size > 1.
    private void RunAllReduce(Tensor flat, ReduceOp op)
    {
        using var _ = torch.no_grad();
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
        using var staged = HostStaging.In(tensor, copyIn: Rank == root);
        Execute(Opcode.Broadcast, staged.Host, RingPlan.Whole(staged.Host.numel()), RingPlan.Broadcast(Rank, root, WorldSize), ReduceOp.Sum);
        staged.Out();
    }

    /// <summary>The input is copied into this rank's slice of the output (of its host copy for a CUDA output), which
    /// the ring then fills.</summary>
    public void AllGather(Tensor input, Tensor output)
    {
        CheckPair(input, output, output.numel(), input.numel(), "output.numel must be world * input.numel");
        Drain();
        using var _ = torch.no_grad();
        if (CopiedAlone(input, output)) return;
        using var inFlat = input.view(-1);
        using var staged = HostStaging.In(output, copyIn: false);
        var each = input.numel();
        using (var mine = staged.Host.narrow(0, Rank * each, each)) mine.copy_(inFlat);
        Execute(Opcode.AllGather, staged.Host, RingPlan.Equal(each, WorldSize), RingPlan.AllGather(Rank, WorldSize).ToArray(), ReduceOp.Sum);
        staged.Out();
    }

    /// <summary>Queues the all-gather on the async worker, as <see cref="AllReduceAsync"/>; this rank's slice is copied
    /// in before it returns.</summary>
    public IPendingCollective AllGatherAsync(Tensor input, Tensor output)
    {
        CheckPair(input, output, output.numel(), input.numel(), "output.numel must be world * input.numel");
        ObjectDisposedException.ThrowIf(disposed, this);
        using var _ = torch.no_grad();
        if (CopiedAlone(input, output)) return PendingCollective.Done;
        var staged = HostStaging.In(output, copyIn: false);
        var each = input.numel();
        using (var inFlat = input.view(-1))
        using (var mine = staged.Host.narrow(0, Rank * each, each)) mine.copy_(inFlat);
        lock (queueGate)
        {
            queue ??= new Worker($"ring-async {groupKey} r{Rank}");
            return new Pending(this, lastQueued = queue.Post(() =>
                Execute(Opcode.AllGather, staged.Host, RingPlan.Equal(each, WorldSize), RingPlan.AllGather(Rank, WorldSize).ToArray(), ReduceOp.Sum)), staged);
        }
    }

    /// <summary>The partial sums travel through <paramref name="output"/> (a chunk-sized accumulator), so the input is
    /// only read and no copy of it is made; an output that overlaps the input gets a temporary accumulator.</summary>
    public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        CheckPair(output, input, input.numel(), output.numel(), "input.numel must be world * output.numel");
        Drain();
        using var _ = torch.no_grad();
        if (CopiedAlone(input, output)) return; // Average over one rank divides by 1
        using var inHost = HostStaging.In(input);
        using var outHost = HostStaging.In(output, copyIn: false);
        var (inFlat, outFlat) = (inHost.Host, outHost.Host);
        if (TensorMemory.Overlap(inFlat, outFlat))
        {
            using var acc = torch.empty_like(outFlat);
            ReduceScatterInto(inFlat, acc, op);
            outFlat.copy_(acc);
        }
        else ReduceScatterInto(inFlat, outFlat, op);
        if (op == ReduceOp.Average) TensorMemory.DivideBy(outFlat, WorldSize);
        outHost.Out();
    }

    /// <summary>Queues the reduce-scatter on the async worker, as <see cref="AllReduceAsync"/>: a CUDA input is copied
    /// to the host here, a CPU input is read by the worker (so it stays unchanged until Wait), and the output is written
    /// (copied back for a CUDA one) in Wait.</summary>
    public IPendingCollective ReduceScatterAsync(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum)
    {
        CheckPair(output, input, input.numel(), output.numel(), "input.numel must be world * output.numel");
        ObjectDisposedException.ThrowIf(disposed, this);
        using var _ = torch.no_grad();
        if (CopiedAlone(input, output)) return PendingCollective.Done;
        var inHost = HostStaging.In(input);
        var outHost = HostStaging.In(output, copyIn: false);
        if (TensorMemory.Overlap(inHost.Host, outHost.Host))
        {
            inHost.Dispose();
            outHost.Dispose();
            throw new ArgumentException($"rank {Rank}: an asynchronous reduce-scatter's output overlaps its input, which the ring reads until it is done");
        }
        lock (queueGate)
        {
            queue ??= new Worker($"ring-async {groupKey} r{Rank}");
            return new Pending(this, lastQueued = queue.Post(() =>
            {
                using var noGrad = torch.no_grad();
                ReduceScatterInto(inHost.Host, outHost.Host, op);
                if (op == ReduceOp.Average) TensorMemory.DivideBy(outHost.Host, WorldSize);
            }), outHost, inHost);
        }
    }

    // At world size 1 all-gather and reduce-scatter copy the input to the output, on its device; true when so.
    private bool CopiedAlone(Tensor input, Tensor output)
    {
        if (WorldSize > 1) return false;
        using var outFlat = output.view(-1);
        using var inFlat = input.view(-1);
        outFlat.copy_(inFlat);
        return true;
    }

    private void ReduceScatterInto(Tensor input, Tensor acc, ReduceOp op) =>
        Execute(Opcode.ReduceScatter, input, RingPlan.Equal(acc.numel(), WorldSize), RingPlan.ReduceScatter(Rank, WorldSize).ToArray(), op, acc);

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
        var groupKey = $"{this.groupKey}/split{splits++}/color{color}";
        return Create(rendezvous, groupKey, Array.IndexOf(members, Rank), members.Length, options with { Port = 0 });
    }

    public void Dispose()
    {
        if (disposed) return;
        disposed = true;
        active?.Abort();
        links?.Dispose();
        sender?.Dispose();
        queue?.Dispose(); // queued all-reduces that did not run yet fail (disposed) and their Wait throws
    }

    public override string ToString() => $"TcpRingCommunicator(group '{groupKey}', rank {Rank} of {WorldSize})";

    // Synchronous operations run after every queued all-reduce, so all ranks see one order of operations.
    private void Drain()
    {
        Job? last;
        lock (queueGate) last = lastQueued;
        if (last is not null) Await(last);
    }

    /// <summary>Waits for a queued job. Gives up when the ring moved no segment and the queue finished no job for a
    /// whole timeout plus grace, the rule a synchronous call's sockets follow (a big all-reduce that keeps moving data
    /// may take longer than one timeout in all): then the communicator breaks.</summary>
    private void Await(Job job)
    {
        var timeout = options.EffectiveTimeout + TimeSpan.FromMilliseconds(Math.Min(1000, options.EffectiveTimeout.TotalMilliseconds / 4));
        long Moved() => queue!.Finished + Interlocked.Read(ref segmentsMoved);
        for (var seen = Moved(); !job.Wait(timeout); seen = Moved())
            if (Moved() == seen)
            {
                var failure = new CollectiveException(Fail("a queued AllReduce",
                    new TimeoutException($"no queued all-reduce moved data or finished within {timeout.TotalSeconds:0.###} s")));
                job.Wait(SenderExit); // the links are closed: the queued job ends, and stops writing the caller's buffers before they are freed
                throw failure;
            }
    }

    // How long a failed operation waits for its other thread to leave the caller's tensors once the links are closed.
    private static readonly TimeSpan SenderExit = TimeSpan.FromSeconds(5);

    // Segments sent or received by any ring pass: a waiter's sign that the ring still moves.
    private long segmentsMoved;

    // Wait: the job's failure (already a broken communicator), as a CollectiveException of the waiting thread.
    // Wait copies a staged CUDA tensor back once the job finished (the first Wait that sees it succeed).
    // staged: the result's host copy (copied out in Wait); read: a host copy the operation only read, freed with it.
    private sealed class Pending(TcpRingCommunicator c, Job job, HostStaging staged, HostStaging? read = null) : IPendingCollective
    {
        public void Wait()
        {
            c.Await(job);
            read?.Dispose();
            if (job.Error is { } e)
            {
                staged.Dispose();
                throw new CollectiveException(e is CollectiveException ? e.Message : $"rank {c.Rank}: queued collective failed: {e.Message}", e);
            }
            staged.Out();
            staged.Dispose();
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
        if (small.device_type != big.device_type || small.device_index != big.device_index)
            throw new ArgumentException($"rank {Rank}: devices differ: {small.device} and {big.device}");
        if (bigNumel != smallNumel * WorldSize)
            throw new ArgumentException($"rank {Rank}: {rule} (world {WorldSize}): got {bigNumel} and {smallNumel}");
    }

    // Runs one ring pass: the send half on the worker thread, the receive half (and the reductions) on this thread.
    // acc: see RingPass.
    private void Execute(Opcode opcode, Tensor flat, Chunk[] chunks, RingStep[] steps, ReduceOp op, Tensor? acc = null)
    {
        ObjectDisposedException.ThrowIf(this.disposed, this);
        if (broken is not null) throw new CollectiveException($"rank {Rank}: communicator is broken by an earlier failure: {broken}");
        var pass = active = new RingPass(this, opcode, ++sequence, flat, chunks, steps, op, acc);
        Job? job = null;
        try
        {
            job = steps.Any(s => s.Send >= 0) ? sender!.Post(pass.SendAll) : null;
            if (steps.Any(s => s.Recv >= 0)) pass.ReceiveAll();
            if (job is not null) AwaitSend(job, pass.Name);
        }
        catch (Exception e) when (e is not CollectiveException || broken is null)
        {
            // The receive half gives up when the send half failed: the send half's error names the cause.
            var cause = e is OperationCanceledException && (pass.SendError ?? job?.Error) is { } sendError ? sendError : e;
            var failure = new CollectiveException(Fail(pass.Name, cause), cause);
            job?.Wait(SenderExit); // the links are closed: the send half ends at once, and stops reading the caller's tensor before it is freed
            throw failure;
        }
        catch (CollectiveException e)
        {
            throw new CollectiveException(broken!, e);
        }
        finally
        {
            active = null;
        }
    }

    // The send half may trail the receive half by a whole chunk: it has stalled only when it moved nothing for a timeout.
    private void AwaitSend(Job job, string name)
    {
        for (var seen = Interlocked.Read(ref segmentsMoved); !job.Wait(options.EffectiveTimeout); seen = Interlocked.Read(ref segmentsMoved))
            if (Interlocked.Read(ref segmentsMoved) == seen)
                throw new PeerIoException(links!.Next, links.NextEndpoint, $"sending to rank {links.Next} moved nothing for {options.EffectiveTimeout.TotalSeconds:0.###} s", timedOut: true);
        if (job.Error is not null)
            throw new CollectiveException(Fail(name, job.Error), job.Error);
    }

    /// <summary>Marks the communicator broken (once), names the first failure of the group through the rendezvous,
    /// then closes the sockets so the neighbours fail at once instead of at their timeouts. Returns the message.</summary>
    private string Fail(string opName, Exception cause)
    {
        lock (failGate)
        {
            if (broken is not null) return broken;
            if (disposed) return broken = $"group '{groupKey}': rank {Rank} was disposed during {opName}";
            var root = Unwrap(cause);
            if (root is PeerIoException { TimedOut: true } stall) root = BlameStalled(stall);
            var local = root is PeerIoException p
                ? $"rank {p.PeerRank} ({p.PeerEndpoint}) failed: {p.What}; seen by rank {Rank} during {opName}"
                : $"rank {Rank} failed during {opName}: {root.Message}";
            var first = FirstFailure() ?? ReportAndRead(local);
            broken = first == local ? $"group '{groupKey}': {local}" : $"group '{groupKey}': {first} (then rank {Rank} saw: {local})";
            active?.Abort();
            links?.Dispose(); // after the report, so a neighbour that sees our EOF finds the original cause
            return broken;
        }
    }

    /// <summary>A timeout does not prove the silent peer is the culprit: it may itself wait on its own previous rank.
    /// Each timed-out rank records whom it waits on under "{group}/stalled/{rank}"; after a grace period the chain of
    /// waits is followed to the first rank that is not waiting on anyone, which is named.</summary>
    private PeerIoException BlameStalled(PeerIoException stall)
    {
        try
        {
            rendezvous.ReportFailure($"{groupKey}/stalled/{Rank}", stall.PeerRank.ToString(System.Globalization.CultureInfo.InvariantCulture));
            Thread.Sleep(TimeSpan.FromMilliseconds(Math.Min(1000, options.EffectiveTimeout.TotalMilliseconds / 4)));
            var suspect = stall.PeerRank;
            for (var hops = 0; hops < WorldSize; hops++)
            {
                if (!int.TryParse(rendezvous.Failure($"{groupKey}/stalled/{suspect}"), out var next) || next == Rank) break;
                suspect = next;
            }
            if (suspect == stall.PeerRank) return stall;
            var endpoint = links!.Endpoints.ElementAtOrDefault(suspect) ?? "?";
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
        try { return rendezvous.Failure(groupKey); }
        catch (Exception) { return null; } // the rendezvous itself may be gone; the local view still names a peer
    }

    private string ReportAndRead(string local)
    {
        try { rendezvous.ReportFailure(groupKey, local); }
        catch (Exception) { return local; }
        return FirstFailure() ?? local;
    }

    /// <summary>One ring operation over a flat tensor: the segment schedule plus the send and receive loops. Without
    /// an accumulator, reductions land in the flat tensor and forwarded chunks are read from it. With one (reduce-scatter,
    /// one chunk long), the flat tensor is only read: a received partial is reduced with the flat tensor's chunk into the
    /// accumulator, and the next step forwards it from there; the last step's partial is the result. A segment of the
    /// accumulator is overwritten only once the send half has sent what it held.</summary>
    private sealed class RingPass
    {
        private readonly TcpRingCommunicator c;
        private readonly Opcode opcode;
        private readonly int sequence;
        private readonly Tensor flat;
        private readonly Chunk[] chunks;
        private readonly RingStep[] steps;
        private readonly ReduceOp op;
        private readonly Tensor? acc;
        private readonly long segment;      // elements per segment
        private readonly int elementBytes;
        private readonly long[] recvBase;   // segments received before step t
        private readonly long[] sendBase;   // segments sent before step t
        private readonly Progress received = new();
        private readonly Progress sent = new();

        public string Name => $"{opcode} #{sequence} ({flat.numel()} x {flat.dtype})";

        public RingPass(TcpRingCommunicator c, Opcode opcode, int sequence, Tensor flat, Chunk[] chunks, RingStep[] steps, ReduceOp op, Tensor? acc)
        {
            (this.c, this.opcode, this.sequence, this.flat, this.chunks, this.steps, this.op, this.acc) = (c, opcode, sequence, flat, chunks, steps, op, acc);
            elementBytes = TensorMemory.ElementBytes(flat);
            segment = Math.Max(1, c.options.ChunkBytes / elementBytes);
            recvBase = Bases(s => s.Recv);
            sendBase = Bases(s => s.Send);
        }

        // Prefix sums of the segments of the chunk each step sends (or receives).
        private long[] Bases(Func<RingStep, int> chunkOf)
        {
            var bases = new long[steps.Length + 1];
            for (var t = 0; t < steps.Length; t++)
                bases[t + 1] = bases[t] + (chunkOf(steps[t]) >= 0 ? RingPlan.Segments(chunks[chunkOf(steps[t])], segment) : 0);
            return bases;
        }

        /// <summary>Stops both halves' waits (a failure, or the communicator disposed).</summary>
        public void Abort()
        {
            received.Abort();
            sent.Abort();
        }

        /// <summary>Why the send half failed, recorded before it stops the receive half's wait (the job's own error is
        /// set only once the exception has left this method).</summary>
        public Exception? SendError { get; private set; }

        public void SendAll()
        {
            try { SendSteps(); }
            catch (Exception e)
            {
                SendError = e;
                sent.Abort(); // the receive half may wait to overwrite a segment this half will never send
                throw;
            }
        }

        private void SendSteps()
        {
            var links = c.links!;
            links.Send(Header());
            for (var t = 0; t < steps.Length; t++)
            {
                var send = steps[t].Send;
                if (send < 0) continue;
                var forwards = t > 0 && steps[t - 1].Recv == send;
                var chunk = chunks[send];
                for (long k = 0; k < RingPlan.Segments(chunk, segment); k++)
                {
                    if (forwards && !received.WaitFor(recvBase[t - 1] + k + 1, c.options.EffectiveTimeout))
                        throw new PeerIoException(links.Prev, links.PrevEndpoint, $"no data from rank {links.Prev} within {c.options.EffectiveTimeout.TotalSeconds:0.###} s", timedOut: true);
                    var seg = SegmentOf(chunk, k);
                    links.Send(forwards && acc is not null ? BytesOf(acc, seg.Start - chunk.Start, seg.Count) : BytesOf(flat, seg.Start, seg.Count));
                    sent.Advance();
                    Interlocked.Increment(ref c.segmentsMoved);
                }
            }
        }

        public void ReceiveAll()
        {
            var links = c.links!;
            Span<byte> header = stackalloc byte[HeaderBytes];
            links.Receive(header);
            CheckHeader(header);
            using var scratch = steps.Any(s => s.Reduce && s.Recv >= 0) ? torch.empty(ScratchLength(), flat.dtype) : null;
            for (var t = 0; t < steps.Length; t++)
            {
                var step = steps[t];
                if (step.Recv < 0) continue;
                var chunk = chunks[step.Recv];
                for (long k = 0; k < RingPlan.Segments(chunk, segment); k++)
                {
                    var seg = SegmentOf(chunk, k);
                    if (!step.Reduce) links.Receive(BytesOf(flat, seg.Start, seg.Count));
                    else if (acc is null) ReceiveAndReduce(seg, scratch!);
                    else ReceiveAndAccumulate(seg, seg.Start - chunk.Start, sendBase[t] + k + 1, scratch!);
                    received.Advance();
                    Interlocked.Increment(ref c.segmentsMoved);
                }
            }
        }

        private long ScratchLength() => Math.Max(1, Math.Min(segment, chunks.Max(c => c.Count)));

        private void ReceiveAndReduce(Chunk seg, Tensor scratch)
        {
            using var source = scratch.narrow(0, 0, seg.Count);
            c.links!.Receive(BytesOf(source, 0, seg.Count));
            using var target = flat.narrow(0, seg.Start, seg.Count);
            TensorMemory.Reduce(target, source, op);
        }

        // acc[offset..] = received op flat[seg], once the send half has sent its first `sentBefore` segments (the
        // last of them read this part of acc). The sum is received + local where the in-place path adds local +
        // received: the same bits, addition being commutative.
        private void ReceiveAndAccumulate(Chunk seg, long offset, long sentBefore, Tensor scratch)
        {
            using var partial = scratch.narrow(0, 0, seg.Count);
            c.links!.Receive(BytesOf(partial, 0, seg.Count));
            using (var local = flat.narrow(0, seg.Start, seg.Count)) TensorMemory.Reduce(partial, local, op);
            if (!sent.WaitFor(sentBefore, c.options.EffectiveTimeout))
                throw new PeerIoException(c.links.Next, c.links.NextEndpoint, $"sending to rank {c.links.Next} did not progress within {c.options.EffectiveTimeout.TotalSeconds:0.###} s", timedOut: true);
            using var target = acc!.narrow(0, offset, seg.Count);
            target.copy_(partial);
        }

        private Chunk SegmentOf(Chunk chunk, long k)
        {
            var start = chunk.Start + k * segment;
            return new Chunk(start, Math.Min(segment, chunk.Start + chunk.Count - start));
        }

        // count elements of t from element start.
        private unsafe Span<byte> BytesOf(Tensor t, long start, long count) =>
            new((byte*)TensorMemory.Data(t) + start * elementBytes, checked((int)(count * elementBytes)));

        private byte[] Header()
        {
            var h = new byte[HeaderBytes];
            BinaryPrimitives.WriteInt32LittleEndian(h, (int)opcode);
            BinaryPrimitives.WriteInt32LittleEndian(h.AsSpan(4), sequence);
            BinaryPrimitives.WriteInt64LittleEndian(h.AsSpan(8), flat.numel() * elementBytes);
            return h;
        }

        // The previous rank must be running the same operation on the same number of bytes.
        private void CheckHeader(ReadOnlySpan<byte> h)
        {
            var opcode = (Opcode)BinaryPrimitives.ReadInt32LittleEndian(h);
            var sequence = BinaryPrimitives.ReadInt32LittleEndian(h[4..]);
            var bytes = BinaryPrimitives.ReadInt64LittleEndian(h[8..]);
            var mine = flat.numel() * elementBytes;
            if (opcode != this.opcode || sequence != this.sequence || bytes != mine)
                throw new InvalidOperationException($"mismatched collective: rank {this.c.links!.Prev} ({this.c.links.PrevEndpoint}) runs {opcode} #{sequence} "
                    + $"on {bytes} bytes, rank {this.c.Rank} runs {this.opcode} #{this.sequence} on {mine} bytes");
        }
    }
}
