// What kind of failure a rank reports: the coordinator restarts only the kinds another try may cure.
namespace Job;

/// <summary>The class of a rank's failure, as the rank saw it (the proto's FailureClass).</summary>
public enum FailureClass
{
    /// <summary>Not known: the generation fails and the job restarts it (a transient fault, or a rank that does not say).</summary>
    Other,
    /// <summary>Bad settings or data (a model too large for the machine, a malformed shard): the job fails at once.</summary>
    Configuration,
    /// <summary>Out of memory, no space left on device: the job fails at once, naming the rank and the cause.</summary>
    Resource,
    /// <summary>A peer closed its connection or went silent: the consequence of another rank's failure, which is looked
    /// for first (its own report, its process's exit, its missing heartbeats) before this one is blamed.</summary>
    PeerLost,
}
