// oec.method = none: the baseline, no hook.
namespace Oec;

/// <summary>No mitigation: the baseline that diverges at large learning rates.</summary>
public sealed class NoneMethod : IOecMethod;
