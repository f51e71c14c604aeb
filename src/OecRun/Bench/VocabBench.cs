// The vocabulary-sharded head (issue 5): memory per rank, step time and the OEC methods' overhead at tp = 1, 2, 4.
using Job;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Collectives;
using Coordinator;
using Oec;
using OecRun.Launching;
using Rank.Configuration;
using Rank.Model;
using Rank.Training;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace OecRun.Bench;

/// <summary>
/// A model whose head dominates (tiny body: 2 layers, d 64; a large vocabulary; B = 8, T = 32, untied embeddings) is
/// trained at dp = 1 and tp = each part, the tp ranks as threads of this process with one libtorch thread each and
/// a TCP ring over loopback. Every rank holds one trainer per method (none, mu-loss, mu-centering) on the same seed
/// and data; the methods take their steps in turn (round-robin, the order rotated every round) so that a noisy
/// machine slows all of them alike. Times are rank 0's; collectives synchronise the ranks, so rank 0's step is the step.
/// </summary>
public static class VocabBench
{
    const int Warmup = 2, BatchSize = 8, SequenceLength = 32;
    static readonly OecMethod[] Methods = [OecMethod.None, OecMethod.MuLoss, OecMethod.MuCentering];
    // The embeddings, by the names Model.ShardedNames gives them when tp > 1 (it is empty at tp = 1, where nothing is split).
    static readonly HashSet<string> HeadNames = ["wte.weight", "lm_head"];

    /// <summary>Bytes of one rank's parameters and AdamW state (exp_avg, exp_avg_sq), of the head and of the body.</summary>
    sealed record Memory(long HeadParameters, long HeadState, long BodyParameters, long BodyState);

    /// <summary>Per method, rank 0's milliseconds per step: wall clock, and the part of it inside collectives; per rank
    /// and method, the rank thread's CPU milliseconds per step.</summary>
    sealed record Layout(int Tp, List<double>[] StepMs, List<double>[] CollectiveMs, List<double>[][] CpuMs, Memory[] PerRank);

    /// <summary>Prints the tables; returns the exit code (the re-run's, where this process re-runs itself in one arena).</summary>
    public static int Run(IReadOnlyList<int> parts, int steps, int vocab, TextWriter console)
    {
        if (steps < 1) throw new ArgumentException($"--steps {steps}: must be >= 1");
        if (parts.Count == 0 || parts.Any(tp => tp < 1 || tp > 64)) throw new ArgumentException($"--parts {string.Join(",", parts)}: each must be in [1, 64]");
        // glibc gives every allocating thread an arena of its own, and TorchRuntime's mallopt settings hold for the main
        // arena only: rank threads then map and fault their logits' pages afresh every step (measured: 2.5x slower and
        // steps scattered over 100-350 ms at tp = 1). Real ranks train on their process's main thread. One arena
        // (MALLOC_ARENA_MAX=1, read by glibc at start-up, hence the re-run) puts the threads where the ranks are.
        if (OperatingSystem.IsLinux() && Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") is null) return RerunInOneArena();
        // Padding to 64 x lcm(parts) rows makes the padded vocabulary divisible by every tp (and keeps GPT-2's multiple of 64).
        int multiple = 64 * parts.Aggregate(1, (a, b) => a / Gcd(a, b) * b);
        var layouts = parts.Select(tp => RunLayout(tp, steps, vocab, multiple)).ToList();
        int paddedVocab = new ModelOptions { VocabMultiple = multiple }.PaddedVocab(vocab);
        int tokens = BatchSize * SequenceLength;
        console.WriteLine($"vocabulary {vocab} (padded {paddedVocab}), tiny body (2 layers, d 64), untied, B = {BatchSize}, T = {SequenceLength} ({tokens} tokens/step), " +
                          $"{Warmup} warm-up + {steps} timed steps, {Environment.ProcessorCount} cores, MALLOC_ARENA_MAX={Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX")}");
        console.WriteLine();

        static double MB(long bytes) => bytes / 1048576.0;
        var first = layouts[0].PerRank.Max(m => m.HeadParameters + m.HeadState);
        console.WriteLine("| tp | head parameters per rank (MB) | head AdamW state per rank (MB) | head total vs tp = " + parts[0] + " | ideal | body parameters (MB) | body AdamW state (MB) |");
        console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var l in layouts)
        {
            // Every rank holds an equal shard; the largest rank is what a device must fit.
            var m = l.PerRank.MaxBy(m => m.HeadParameters + m.HeadState)!;
            console.WriteLine($"| {l.Tp} | {MB(m.HeadParameters):F2} | {MB(m.HeadState):F2} | {(double)(m.HeadParameters + m.HeadState) / first:F3} | {(double)parts[0] / l.Tp:F3} | {MB(m.BodyParameters):F3} | {MB(m.BodyState):F3} |");
        }
        console.WriteLine();

        // CPU: the rank thread's own time (compute, receiving and reducing; not the ring's send threads), which other
        // processes taking the cores do not inflate: the steadier measure of a method's cost on a shared machine.
        console.WriteLine($"| tp | method | median ms/step | tokens/s | speed-up vs tp = {parts[0]} | rank 0 in collectives (ms) | rank 0 CPU (ms) | all ranks' CPU (ms) | vs none, wall | vs none, CPU |");
        console.WriteLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var l in layouts)
            for (int i = 0; i < Methods.Length; i++)
            {
                double ms = Median(l.StepMs[i]), cpu = Median(l.CpuMs[0][i]);
                console.WriteLine($"| {l.Tp} | {Methods[i]} | {ms:F1} | {tokens / ms * 1000:F0} | {Median(layouts[0].StepMs[i]) / ms:F2}x | {Median(l.CollectiveMs[i]):F1} | " +
                                  $"{cpu:F1} | {l.CpuMs.Sum(r => Median(r[i])):F1} | {(ms / Median(l.StepMs[0]) - 1) * 100:+0.0;-0.0}% | {(cpu / Median(l.CpuMs[0][0]) - 1) * 100:+0.0;-0.0}% |");
            }
        return 0;
    }

    /// <summary>This command again, as a child with MALLOC_ARENA_MAX=1 and this console; its exit code.</summary>
    static int RerunInOneArena()
    {
        var self = Launch.SelfCommand([.. Environment.GetCommandLineArgs().Skip(1)]);
        var info = new ProcessStartInfo(self.FileName) { UseShellExecute = false, Environment = { ["MALLOC_ARENA_MAX"] = "1" } };
        foreach (var arg in self.Arguments) info.ArgumentList.Add(arg);
        using var child = Process.Start(info) ?? throw new InvalidOperationException($"cannot start {self.FileName}");
        child.WaitForExit();
        return child.ExitCode;
    }

    static Layout RunLayout(int tp, int steps, int vocab, int multiple)
    {
        var config = new RunConfig
        {
            Model = new ModelOptions { Preset = "tiny", VocabMultiple = multiple },
            Data = new DataOptions { VocabSize = vocab, SyntheticTokens = 200_000 }, // ample for (2 + steps) x 8 sequences
            Train = new TrainOptions { Steps = Warmup + steps, WarmupSteps = 1, BatchSize = BatchSize, SequenceLength = SequenceLength, Threads = 1, EvalEvery = 0 },
            Job = new JobOptions { WorldSize = tp, VocabParallel = tp },
        }.Validated();
        List<double>[] PerMethod() => Methods.Select(_ => new List<double>()).ToArray();
        var layout = new Layout(tp, PerMethod(), PerMethod(), Enumerable.Range(0, tp).Select(_ => PerMethod()).ToArray(), new Memory[tp]);
        var rendezvous = new InProcessRendezvous();
        var ring = new TcpOptions(TcpOptions.NewToken(), Timeout: TimeSpan.FromSeconds(120));
        var errors = new Exception?[tp];
        var threads = Enumerable.Range(0, tp).Select(rank => new Thread(() =>
        {
            var clocks = Methods.Select(_ => new StrongBox<long>()).ToArray(); // Stopwatch ticks inside collectives, per method
            var comms = Methods.Select((m, i) => tp == 1 ? null
                : new TimedCommunicator(TcpRingCommunicator.Create(rendezvous, $"vocab-{tp}-{m}", rank, tp, ring), clocks[i])).ToArray();
            var trainers = new List<Trainer>();
            try
            {
                for (int i = 0; i < Methods.Length; i++)
                    trainers.Add(new Trainer(config with { Oec = config.Oec with { Method = Methods[i] } }, comms[i]));
                for (int round = 0; round < Warmup + steps; round++)
                    for (int k = 0; k < Methods.Length; k++)
                    {
                        int i = (k + round) % Methods.Length; // rotated, so that no method always follows the same one
                        long before = clocks[i].Value, start = Stopwatch.GetTimestamp();
                        double cpu = ThreadCpuMs();
                        trainers[i].Step(round, statistics: false);
                        if (round < Warmup) continue;
                        layout.CpuMs[rank][i].Add(ThreadCpuMs() - cpu);
                        if (rank != 0) continue;
                        layout.StepMs[i].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                        layout.CollectiveMs[i].Add(Stopwatch.GetElapsedTime(0, clocks[i].Value - before).TotalMilliseconds);
                    }
                layout.PerRank[rank] = Measure(trainers[0]);
                foreach (var c in comms) c?.Barrier(); // no rank closes its sockets while another still reads from them
            }
            catch (Exception e) { errors[rank] = e; }
            finally
            {
                trainers.ForEach(t => t.Dispose());
                foreach (var c in comms) c?.Dispose();
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        if (errors.Any(e => e is not null)) // every rank's error: the first to fail makes the others fail too
            throw new InvalidOperationException($"bench-vocab at tp = {tp} failed: " + string.Join("; ", errors.Select((e, r) => e is null ? null : $"rank {r}: {e.GetType().Name}: {e.Message}").OfType<string>()),
                new AggregateException(errors.OfType<Exception>()));
        return layout;
    }

    /// <summary>Bytes of this rank's tensors: its parameters and their AdamW moments (exp_avg, exp_avg_sq), head and body.</summary>
    static Memory Measure(Trainer trainer)
    {
        var owned = trainer.Model.named_parameters().Select(n =>
        {
            var (expAvg, expAvgSq) = ((FlatAdamW)trainer.Optimizer).StateOf(n.parameter);
            return (Head: HeadNames.Contains(n.name), Bytes: HeldBytes.Of(expAvg) + HeldBytes.Of(expAvgSq));
        }).ToList();
        var parameters = trainer.Model.named_parameters().Select(n => (Head: HeadNames.Contains(n.name), Bytes: HeldBytes.Of(n.parameter))).ToList();
        return new Memory(parameters.Where(p => p.Head).Sum(p => p.Bytes), owned.Where(s => s.Head).Sum(s => s.Bytes),
                          parameters.Where(p => !p.Head).Sum(p => p.Bytes), owned.Where(s => !s.Head).Sum(s => s.Bytes));
    }

    /// <summary>Adds the wall time spent in every collective (transfer and waiting for the other ranks) to a shared clock.</summary>
    sealed class TimedCommunicator(ICommunicator inner, StrongBox<long> ticks) : ICommunicator
    {
        public int Rank => inner.Rank;
        public int WorldSize => inner.WorldSize;
        public void AllReduce(Tensor tensor, ReduceOp op = ReduceOp.Sum) => Timed(() => inner.AllReduce(tensor, op));
        public void Broadcast(Tensor tensor, int root) => Timed(() => inner.Broadcast(tensor, root));
        public void AllGather(Tensor input, Tensor output) => Timed(() => inner.AllGather(input, output));
        public void ReduceScatter(Tensor input, Tensor output, ReduceOp op = ReduceOp.Sum) => Timed(() => inner.ReduceScatter(input, output, op));
        public void Barrier() => Timed(inner.Barrier);
        public ICommunicator Split(int color, int key) => new TimedCommunicator(inner.Split(color, key), ticks);
        public void Dispose() => inner.Dispose();

        void Timed(Action collective)
        {
            long start = Stopwatch.GetTimestamp();
            collective();
            Interlocked.Add(ref ticks.Value, Stopwatch.GetTimestamp() - start);
        }
    }

    /// <summary>CPU time of the calling thread in ms (Linux: clock_gettime(CLOCK_THREAD_CPUTIME_ID)); NaN elsewhere.</summary>
    static double ThreadCpuMs() => OperatingSystem.IsLinux() && clock_gettime(ClockThreadCpuTime, out var t) == 0 ? t.Seconds * 1e3 + t.Nanoseconds / 1e6 : double.NaN;

    const int ClockThreadCpuTime = 3; // CLOCK_THREAD_CPUTIME_ID, <time.h>

    [StructLayout(LayoutKind.Sequential)]
    struct TimeSpec { public long Seconds, Nanoseconds; }

    [DllImport("libc.so.6")]
    static extern int clock_gettime(int clock, out TimeSpec time);

    static int Gcd(int a, int b) => b == 0 ? a : Gcd(b, a % b);

    static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }
}
