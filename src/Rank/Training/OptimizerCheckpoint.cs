// AdamW's state in a checkpoint, by parameter and element range, so that a job resumes at another world size or ZeRO stage.
using Job;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Rank.Training;

/// <summary>Elements [<see cref="Start"/>, Start + length) of the flattened parameter <see cref="Name"/> of
/// <see cref="Total"/> elements, and their moments ([length] each, on any device).</summary>
public sealed record MomentChunk(string Name, long Total, long Start, Tensor ExpAvg, Tensor ExpAvgSq);

/// <summary>
/// The moments of AdamW as safetensors files of chunks (PyTorch's distributed checkpoint does the same): each rank
/// writes the elements it holds, tensors "{name}@{start}/{total}.exp_avg" and ".exp_avg_sq" (fp32, 1-D), and the step in the
/// metadata. A reader takes from every file the elements it needs, whatever ranks wrote them: the whole parameters
/// for an optimizer that holds them all, one shard for ZeRO.
/// </summary>
public static class OptimizerCheckpoint
{
    const string Format = "oec adamw chunks 1";

    public static void Write(string path, long step, IEnumerable<MomentChunk> chunks)
    {
        var tensors = chunks.SelectMany(c => new[] { ($"{c.Name}@{c.Start}/{c.Total}.exp_avg", c.ExpAvg), ($"{c.Name}@{c.Start}/{c.Total}.exp_avg_sq", c.ExpAvgSq) }).ToList();
        Checkpoint.Write(path, tensors, new Dictionary<string, string> { ["optimizer"] = Format, ["step"] = step.ToString(System.Globalization.CultureInfo.InvariantCulture) });
    }

    /// <summary>
    /// Fills <paramref name="wanted"/> (chunks whose tensors are the reader's own buffers) from <paramref name="files"/>,
    /// one file in memory at a time. Returns the step. Throws naming the file when the files disagree on the step or
    /// are not this format, and naming the parameter when an element wanted is in no file.
    /// </summary>
    public static long Read(IReadOnlyList<string> files, IReadOnlyList<MomentChunk> wanted)
    {
        if (files.Count == 0) throw new InvalidDataException("the checkpoint has no optimizer state files");
        var byName = wanted.ToLookup(w => w.Name);
        var covered = wanted.ToDictionary(w => w, _ => 0L);
        long? step = null;
        using var noGrad = no_grad();
        foreach (string file in files)
        {
            string format = Checkpoint.ReadMetadata(file, "optimizer");
            if (format != Format) throw new InvalidDataException($"{file}: optimizer state in format '{format}', expected '{Format}'");
            long fileStep = long.Parse(Checkpoint.ReadMetadata(file, "step"), System.Globalization.CultureInfo.InvariantCulture);
            if (step is { } s && s != fileStep) throw new InvalidDataException($"{file}: optimizer step {fileStep}, another file of the checkpoint has {s}");
            step = fileStep;
            using var scope = NewDisposeScope();
            var tensors = Safetensors.LoadStateDict(file);
            foreach (var (key, expAvg) in tensors)
            {
                if (!key.EndsWith(".exp_avg", StringComparison.Ordinal)) continue;
                string stem = key[..^".exp_avg".Length];
                int at = stem.LastIndexOf('@'), slash = stem.LastIndexOf('/');
                string name = stem[..at];
                long start = long.Parse(stem[(at + 1)..slash], System.Globalization.CultureInfo.InvariantCulture);
                long total = long.Parse(stem[(slash + 1)..], System.Globalization.CultureInfo.InvariantCulture);
                var expAvgSq = tensors[stem + ".exp_avg_sq"];
                foreach (var w in byName[name])
                {
                    if (w.Total != total) throw new InvalidDataException($"{file}: {name} has {total} elements, this model's has {w.Total}");
                    long from = Math.Max(start, w.Start), to = Math.Min(start + expAvg.numel(), w.Start + w.ExpAvg.numel());
                    if (from >= to) continue;
                    w.ExpAvg.narrow(0, from - w.Start, to - from).copy_(expAvg.narrow(0, from - start, to - from));
                    w.ExpAvgSq.narrow(0, from - w.Start, to - from).copy_(expAvgSq.narrow(0, from - start, to - from));
                    covered[w] += to - from;
                }
            }
        }
        foreach (var (w, count) in covered)
            if (count != w.ExpAvg.numel())
                throw new InvalidDataException($"{Path.GetDirectoryName(files[0])}: the optimizer state covers {count} of elements [{w.Start}, {w.Start + w.ExpAvg.numel()}) of {w.Name} (files: {string.Join(", ", files.Select(Path.GetFileName))})");
        return step!.Value;
    }
}
