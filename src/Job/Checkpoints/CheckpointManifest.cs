// What commits a checkpoint: manifest.json's record, and the entry of each file in it.
namespace Job;

/// <summary>One file of a checkpoint; sha256 in lowercase hex.</summary>
public sealed record CheckpointFile(string Name, long Bytes, string Sha256);

/// <summary>
/// What manifest.json says: the step the checkpoint was taken after (= steps done), the data cursor at that step
/// (epoch and position in it), every file with its size and checksum, and the resolved configuration.
/// A checkpoint directory without a manifest was never committed. DataSkips, LearningRateScale and Rollbacks are the
/// job's divergence rollbacks so far (absent: none), so that a resumed job reads the same data, keeps the lowered rate
/// and counts its rollbacks on; a rollback writes them into its target's manifest at once.
/// </summary>
public sealed record CheckpointManifest(long Step, string JobId, int Generation, int WorldSize, long Epoch, long Position,
    IReadOnlyList<CheckpointFile> Files, string Config, IReadOnlyList<DataSkip>? DataSkips = null, double? LearningRateScale = null,
    int? Rollbacks = null);
