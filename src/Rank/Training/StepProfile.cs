// The step profile: the phases of training steps timed by CUDA events on the GPU, by a stopwatch after a synchronize elsewhere.
using System.Diagnostics;
using Collectives;
using TorchSharp;
using static TorchSharp.torch;

namespace Rank.Training;

/// <summary>A recorder the training step calls at its phase boundaries; it observes only.</summary>
public interface IStepProfiler
{
    /// <summary>The phase named <paramref name="phase"/> ends here (a phase marked twice in a step, once per
    /// micro-batch say, adds up).</summary>
    void Mark(string phase);
}

/// <summary>One phase's mean over the profiled steps, in ms per step.</summary>
public sealed record PhaseTime(string Phase, double Ms);

/// <summary>
/// The profile of the steps between <see cref="BeginStep"/> and <see cref="EndStep"/>. On CUDA each mark records an
/// event on libtorch's current stream (cudaEventRecord through the CUDA runtime libtorch_cuda uses) and the step is
/// never synchronised in between: a phase's time is the GPU time between its events, idle gaps included. Elsewhere
/// (the CPU) each mark reads a stopwatch. Also per step: the host's time to issue it (BeginStep to EndStep's call,
/// before any wait), the GPU's (first event to last) and the tensors created on the step's thread (DisposeScopeManager's
/// statistics: a proxy for the libtorch calls the host makes; the autograd engine's own tensors are not counted).
/// </summary>
public sealed class StepProfile : IStepProfiler, IDisposable
{
    readonly Device device;
    readonly List<(string Phase, IntPtr Event, double HostMs)> marks = [];
    readonly Stack<IntPtr> spareEvents = new();
    readonly Dictionary<string, double> totals = [];
    readonly List<string> order = [];
    readonly Stopwatch clock = new();
    long tensorsAtBegin;
    bool inStep;

    public StepProfile(Device device)
    {
        this.device = device;
        Events = device.type == DeviceType.CUDA && EventsWork();
    }

    /// <summary>Whether the phases are timed by CUDA events (on a CUDA device whose runtime answered) rather than by a
    /// stopwatch after a synchronize.</summary>
    public bool Events { get; }
    public int Steps { get; private set; }
    /// <summary>Totals over the steps: ms to issue them, ms from each one's first mark to its last (on the GPU with
    /// events), tensors created on their thread.</summary>
    public double HostMs { get; private set; }
    public double DeviceMs { get; private set; }
    public long TensorsCreated { get; private set; }

    /// <summary>Each phase's ms per step, in the order the phases first ended.</summary>
    public IReadOnlyList<PhaseTime> Phases => order.Select(p => new PhaseTime(p, totals[p] / Math.Max(Steps, 1))).ToList();

    /// <summary>Steps first .. first + count - 1 of <paramref name="trainer"/> under this profile (without statistics,
    /// as benchmarks run them); the trainer is left unprofiled.</summary>
    public void Profile(Trainer trainer, int first, int count)
    {
        trainer.Profiler = this;
        for (int step = first; step < first + count; step++)
        {
            BeginStep();
            trainer.Step(step, statistics: false);
            EndStep();
        }
        trainer.Profiler = null;
    }

    public void BeginStep()
    {
        tensorsAtBegin = TensorsSoFar();
        inStep = true;
        clock.Restart();
        Mark("");
    }

    public void Mark(string phase)
    {
        if (!inStep) return; // the model's forward outside a profiled step (validation)
        IntPtr cudaEvent = IntPtr.Zero;
        if (Events)
        {
            cudaEvent = spareEvents.Count > 0 ? spareEvents.Pop() : NewEvent();
            NcclNative.Cuda(NcclNative.cudaEventRecord(cudaEvent, NcclNative.CurrentStream(device.index)), "cudaEventRecord");
        }
        else if (device.type == DeviceType.CUDA) cuda.synchronize(device);
        marks.Add((phase, cudaEvent, clock.Elapsed.TotalMilliseconds));
    }

    /// <summary>Ends the step: the host's time is read first, then the GPU is waited for and the phases are added up.</summary>
    public void EndStep()
    {
        double host = clock.Elapsed.TotalMilliseconds;
        TensorsCreated += TensorsSoFar() - tensorsAtBegin;
        inStep = false;
        if (Events) NcclNative.Cuda(NcclNative.cudaEventSynchronize(marks[^1].Event), "cudaEventSynchronize");
        for (int i = 1; i < marks.Count; i++) Add(marks[i].Phase, Elapsed(marks[i - 1], marks[i]));
        HostMs += host;
        DeviceMs += Elapsed(marks[0], marks[^1]);
        foreach (var mark in marks.Where(m => m.Event != IntPtr.Zero)) spareEvents.Push(mark.Event);
        marks.Clear();
        Steps++;
    }

    /// <summary>The profile as a markdown table: phase, ms per step, share of the step; then host against GPU.</summary>
    public void Write(TextWriter console, string title)
    {
        double step = Phases.Sum(p => p.Ms);
        console.WriteLine($"{title}: {Steps} steps, timed by {(Events ? "CUDA events, unsynchronised" : "a stopwatch at each phase's end")}" +
                          (Fallback is null ? "" : $" (CUDA events failed: {Fallback})"));
        console.WriteLine("| phase | ms per step | share of the step |");
        console.WriteLine("|---|---|---|");
        foreach (var p in Phases) console.WriteLine($"| {p.Phase} | {p.Ms:F2} | {p.Ms / step:P1} |");
        console.WriteLine($"| step | {step:F2} | 100% |");
        var backward = Phases.Where(p => p.Phase.StartsWith("backward", StringComparison.Ordinal)).ToList();
        if (backward.Count > 0) console.WriteLine($"backward, whole: {backward.Sum(p => p.Ms):F2} ms per step ({backward.Sum(p => p.Ms) / step:P1} of the step)");
        int n = Math.Max(Steps, 1);
        console.WriteLine($"host: {HostMs / n:F2} ms per step to issue it, {(Events ? "GPU" : "device")}: {DeviceMs / n:F2} ms per step " +
                          $"(the host keeps ahead when its time is well under the GPU's); {TensorsCreated / (double)n:F0} tensors created per step " +
                          "on the step's thread (a proxy for the libtorch calls: the autograd engine's own are not counted)");
    }

    double Elapsed((string Phase, IntPtr Event, double HostMs) from, (string Phase, IntPtr Event, double HostMs) to)
    {
        if (!Events) return to.HostMs - from.HostMs;
        NcclNative.Cuda(NcclNative.cudaEventElapsedTime(out float ms, from.Event, to.Event), "cudaEventElapsedTime");
        return ms;
    }

    void Add(string phase, double ms)
    {
        if (!totals.ContainsKey(phase)) order.Add(phase);
        totals[phase] = totals.GetValueOrDefault(phase) + ms;
    }

    IntPtr NewEvent()
    {
        NcclNative.UseDevice(device.index); // an event belongs to the device current at its creation
        NcclNative.Cuda(NcclNative.cudaEventCreateWithFlags(out var cudaEvent, 0), "cudaEventCreateWithFlags");
        return cudaEvent;
    }

    // One event pair recorded and read: the runtime, its entry points and libtorch's stream all answer.
    bool EventsWork()
    {
        try
        {
            NcclNative.EnsureCudart();
            var (first, second) = (NewEvent(), NewEvent());
            var stream = NcclNative.CurrentStream(device.index);
            NcclNative.Cuda(NcclNative.cudaEventRecord(first, stream), "cudaEventRecord");
            NcclNative.Cuda(NcclNative.cudaEventRecord(second, stream), "cudaEventRecord");
            NcclNative.Cuda(NcclNative.cudaEventSynchronize(second), "cudaEventSynchronize");
            NcclNative.Cuda(NcclNative.cudaEventElapsedTime(out _, first, second), "cudaEventElapsedTime");
            spareEvents.Push(first);
            spareEvents.Push(second);
            return true;
        }
        catch (Exception e) when (e is CollectiveException or DllNotFoundException or EntryPointNotFoundException)
        {
            Fallback = e.Message;
            return false;
        }
    }

    /// <summary>Why CUDA events are not used on a CUDA device (null when they are, or off CUDA).</summary>
    public string? Fallback { get; private set; }

    static long TensorsSoFar()
    {
        var statistics = DisposeScopeManager.Statistics.TensorStatistics;
        return statistics.CreatedInScopeCount + statistics.CreatedOutsideScopeCount;
    }

    public void Dispose()
    {
        foreach (var cudaEvent in spareEvents.Concat(marks.Select(m => m.Event)).Where(e => e != IntPtr.Zero)) NcclNative.cudaEventDestroy(cudaEvent);
        spareEvents.Clear();
        marks.Clear();
    }
}
