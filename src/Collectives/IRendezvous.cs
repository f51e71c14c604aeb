// How peers find each other (exchange of endpoints) and learn which peer failed first; plus an in-process version for tests.
namespace Collectives;

/// <summary>How peers find each other; the coordinator implements it over gRPC.</summary>
public interface IRendezvous
{
    /// <summary>Every one of <paramref name="worldSize"/> callers publishes <paramref name="value"/> under
    /// <paramref name="key"/>; returns all values ordered by rank once all arrived; throws TimeoutException naming the
    /// missing ranks.</summary>
    IReadOnlyList<string> AllGather(string key, int rank, int worldSize, string value, TimeSpan timeout);

    /// <summary>Records the first failure of a group (later reports are ignored), so every rank can name the peer that died.</summary>
    void ReportFailure(string key, string message);

    /// <summary>The first failure reported for the group, or null.</summary>
    string? Failure(string key);
}

/// <summary>Rendezvous for ranks that are threads of one process (tests, benchmarks).</summary>
public sealed class InProcessRendezvous : IRendezvous
{
    private readonly object gate = new();
    private readonly Dictionary<string, string?[]> slots = new();
    private readonly Dictionary<string, string> failures = new();

    public IReadOnlyList<string> AllGather(string key, int rank, int worldSize, string value, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        lock (gate)
        {
            var slots = Publish(key, rank, worldSize, value);
            while (slots.Any(v => v is null))
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                    throw new TimeoutException($"rendezvous '{key}': rank {rank} waited {timeout.TotalSeconds:0.###} s; "
                        + $"ranks [{string.Join(", ", Missing(slots))}] of {worldSize} never arrived");
                Monitor.Wait(gate, left);
            }
            return slots.Select(v => v!).ToArray();
        }
    }

    public void ReportFailure(string key, string message)
    {
        lock (gate) failures.TryAdd(key, message);
    }

    public string? Failure(string key)
    {
        lock (gate) return failures.GetValueOrDefault(key);
    }

    // Caller holds gate. Each (key, rank) may publish once: a key names one exchange.
    private string?[] Publish(string key, int rank, int worldSize, string value)
    {
        if (worldSize < 1 || rank < 0 || rank >= worldSize)
            throw new ArgumentOutOfRangeException(nameof(rank), $"rendezvous '{key}': rank {rank} outside world size {worldSize}");
        if (!this.slots.TryGetValue(key, out var slots))
            this.slots[key] = slots = new string?[worldSize];
        if (slots.Length != worldSize)
            throw new InvalidOperationException($"rendezvous '{key}': rank {rank} says world size {worldSize}, others said {slots.Length}");
        if (slots[rank] is not null)
            throw new InvalidOperationException($"rendezvous '{key}': rank {rank} published twice");
        slots[rank] = value;
        Monitor.PulseAll(gate);
        return slots;
    }

    private static IEnumerable<int> Missing(string?[] slots) =>
        Enumerable.Range(0, slots.Length).Where(i => slots[i] is null);
}
