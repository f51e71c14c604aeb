// What ranks ask the job and what it answers, without the wire: the domain side of the coordinator's protocol.
namespace Coordinator;

/// <summary>Who calls, after registration: the job it names, its generation and rank, and its address (for the log).</summary>
public sealed record Caller(string JobId, int Generation, int Rank, string Peer);

/// <summary>A process asking for a place: WorldSize 0 = not stated, RequestedRank -1 = any free rank.</summary>
public sealed record Candidate(string JobId, int WorldSize, int RequestedRank, string Host, int Pid, string Peer);

/// <summary>A registered rank's place: its generation and rank, where it starts, and the learning-rate scale so far.</summary>
public sealed record Registration(int Generation, int Rank, long StartStep, string? ResumeFrom, double LearningRateScale);

/// <summary>A rank's last word: steps done, its final losses, and whether it stopped as asked rather than finished.</summary>
public sealed record FinishReport(long Step, double TrainLoss, double? ValLoss, bool Stopped);

/// <summary>What a rank must do next: continue; stop at a step the ranks agree on; exit now because the job failed
/// (abort) or its generation is over (restart).</summary>
public enum OrderKind { Continue, Stop, Abort, Restart }

public sealed record RankOrder(OrderKind Kind, string Reason = "")
{
    public static readonly RankOrder Continue = new(OrderKind.Continue);
}
