// Ending a rank process from its heartbeat thread with the documented exit code, whatever the training thread is doing.
using System.Runtime.InteropServices;

namespace Rank.Distributed;

/// <summary>
/// `Environment.Exit` runs the runtime's shutdown and libtorch's static destructors while the training thread may
/// still be inside libtorch (a kernel, a collective waiting on a dead peer); that crashed ranks with SIGSEGV (exit 139)
/// instead of the code their supervisor reads (Kubernetes' pod failure policy ignores ExitCodes.Restart and
/// ExitCodes.LostCoordinator, not 139). `_exit` ends the process at once, as PyTorch's elastic agent does with
/// os._exit: the console is flushed first; files are safe because every write that matters is atomic or flushed.
/// </summary>
static partial class ImmediateExit
{
    [LibraryImport("libc", EntryPoint = "_exit")]
    private static partial void Exit(int status);

    public static void Now(int code, TextWriter console)
    {
        console.Flush();
        Console.Out.Flush();
        Console.Error.Flush();
        Exit(code);
    }
}
