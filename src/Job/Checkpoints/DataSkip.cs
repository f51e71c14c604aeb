// A divergence rollback's skip of data, as the coordinator's data schedule applies it and checkpoint manifests record it.
namespace Job;

/// <summary>From training step FromStep on (0-based, the step about to run), step k reads global batch k + Offset.</summary>
public sealed record DataSkip(long FromStep, long Offset);
