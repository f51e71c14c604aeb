// What the job tells about itself: its phase, each rank of the current generation, and how it ended.
using Job;

namespace Coordinator;

public enum JobPhase { Registering, Running, Succeeded, Stopped, Diverged, Failed }

/// <summary>How the job ended; Step = steps done by then.</summary>
public sealed record JobOutcome(JobPhase Phase, string Reason, long Step, double TrainLoss, double? ValLoss)
{
    public int ExitCode => Phase switch
    {
        JobPhase.Succeeded or JobPhase.Stopped => ExitCodes.Success,
        JobPhase.Diverged => ExitCodes.Diverged,
        _ => ExitCodes.Failed,
    };
}

/// <summary>A rank of the current generation: who it is and what it last said.</summary>
public sealed record RankStatus(int Rank, string Host, int Pid, long Step, double SecondsSinceHeartbeat, bool Finished, StepMetrics? Metrics);
