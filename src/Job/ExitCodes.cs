// The exit codes of oecrun's processes: the one list that launchers, supervisors and Kubernetes' failure policy read.
namespace Job;

/// <summary>
/// What a process's exit code tells its supervisor. A rank that exits <see cref="Restart"/> or
/// <see cref="LostCoordinator"/> is healthy and may be started again (Kubernetes' pod failure policy ignores them);
/// <see cref="Refused"/> means the configuration or data is wrong and another try would fail the same way.
/// </summary>
public static class ExitCodes
{
    /// <summary>The job (or command) succeeded, or stopped at a checkpoint as asked.</summary>
    public const int Success = 0;
    /// <summary>The job failed: its restarts are used up, or a rank's training threw.</summary>
    public const int Failed = 1;
    /// <summary>Bad settings or bad data: one clear line on stderr.</summary>
    public const int Refused = 2;
    /// <summary>The job diverged and its divergence rules said stop, or rollbacks were used up.</summary>
    public const int Diverged = 3;
    /// <summary>A rank told by the coordinator to end (its generation is over: a restart or a rollback), or one whose
    /// peer in a collective was lost, which ends the generation as well.</summary>
    public const int Restart = 4;
    /// <summary>A rank that could not reach the coordinator for job.heartbeat_timeout_s.</summary>
    public const int LostCoordinator = 5;

    /// <summary>The codes after which a rank process may be started again without changing anything.</summary>
    public static readonly IReadOnlyList<int> Recreate = [Restart, LostCoordinator];
}
