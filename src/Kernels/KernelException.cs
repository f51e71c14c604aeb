// The one exception of the kernel runtime.
namespace Kernels;

/// <summary>A kernel could not be compiled, loaded or launched, or the runtime is missing a library; the message names
/// the call, the source or what was looked for.</summary>
public sealed class KernelException(string message) : Exception(message);
