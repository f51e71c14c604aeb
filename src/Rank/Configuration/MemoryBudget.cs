// The memory a run's model needs for training, checked against what the machine has before anything is allocated.
using System.Globalization;
using Rank.Training;

namespace Rank.Configuration;

/// <summary>
/// A lower bound of a rank's training memory (<see cref="MemoryPlan"/>): the parameters times fp32 weights, gradients and
/// AdamW's two moments (16 bytes), plus 2 bytes for the bf16 copy of the weights under train.precision = bf16, less
/// what train.zero shards; activations come on top. Checked on the CPU only (train.device = cpu), against /proc/meminfo's MemAvailable (and the runtime's limit, e.g. a
/// container's); a GPU's free memory is not asked for, so that CUDA is not initialised in a process that may not use it.
/// </summary>
public static class MemoryBudget
{
    const double GiB = 1 << 30;

    /// <summary>Bytes a rank needs at least for training <paramref name="config"/>'s model: MemoryPlan's state bytes
    /// (weights, bf16 copies, gradients, AdamW's moments at train.zero).</summary>
    public static double RankBytes(RunConfig config) => MemoryPlan.Of(config).StateBytes;

    /// <summary>Throws naming the estimate and the limit when <paramref name="ranksHere"/> ranks of
    /// <paramref name="config"/> on this machine's CPU need more than <paramref name="available"/> bytes (default: what
    /// the machine has free now). Nothing to check for train.device = cuda.</summary>
    public static void Check(RunConfig config, int ranksHere, (long Bytes, string Source)? available = null)
    {
        if (config.Train.Device != "cpu") return;
        var (bytes, source) = available ?? Available();
        double need = RankBytes(config) * ranksHere;
        if (need <= bytes) return;
        var c = CultureInfo.InvariantCulture;
        var m = config.Model;
        throw new ArgumentException(string.Create(c,
            $"model.d_model = {m.DModel}, model.n_layer = {m.NLayer}: training needs at least {need / GiB:G4} GiB on this machine " +
            $"({MemoryPlan.Of(config).RankParameters:G4} parameters x {BytesPerParameter(config.Train.Precision)} bytes: fp32 weights, gradients, " +
            $"two AdamW moments{(config.Train.Precision == Precision.Bf16 ? ", a bf16 copy" : "")}{Sharded(config)}; x {ranksHere} rank(s)), but {bytes / GiB:G4} GiB " +
            $"is available ({source}); choose a smaller model.preset or model.d_model"));
    }

    static int BytesPerParameter(Precision precision) => precision == Precision.Bf16 ? 18 : 16;

    static string Sharded(RunConfig config) => config.Train.Zero == 0 ? ""
        : string.Create(CultureInfo.InvariantCulture, $", {RankBytes(config) / GiB:G4} GiB a rank at train.zero = {config.Train.Zero}");

    /// <summary>The memory free now: the smaller of /proc/meminfo's MemAvailable and the runtime's limit.</summary>
    static (long Bytes, string Source) Available()
    {
        long runtime = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        var line = File.Exists("/proc/meminfo") ? File.ReadLines("/proc/meminfo").FirstOrDefault(l => l.StartsWith("MemAvailable:", StringComparison.Ordinal)) : null;
        if (line is not null && long.TryParse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture, out long kib) && kib * 1024 < runtime)
            return (kib * 1024, "MemAvailable in /proc/meminfo");
        return (runtime, "the memory this process may use");
    }
}
