// The communicator of a job's backend (job.backend): the one place that maps the backend to an implementation.
using Collectives;
using Job;

namespace Rank.Parallel;

public static class Communicators
{
    /// <summary>The backend the coordinator names in its registration reply (bootstrap.backend: the member's name, in
    /// any case). Throws naming the value when it names none.</summary>
    public static Backend Parse(string name)
    {
        foreach (var backend in Enum.GetValues<Backend>())
            if (string.Equals(backend.ToString(), name, StringComparison.OrdinalIgnoreCase)) return backend;
        throw new ArgumentException($"bootstrap.backend = '{name}': expected one of {string.Join(", ", Enum.GetNames<Backend>().Select(n => n.ToLowerInvariant()))}");
    }

    /// <summary>
    /// This rank's communicator over all <paramref name="worldSize"/> ranks, meeting them through
    /// <paramref name="rendezvous"/> under <paramref name="groupKey"/>: NCCL on GPU <paramref name="localRank"/>
    /// (waiting up to <paramref name="timeout"/> for the others), or the TCP ring with <paramref name="ring"/>'s job
    /// token and addresses.
    /// </summary>
    public static ICommunicator Create(Backend backend, IRendezvous rendezvous, string groupKey, int rank, int worldSize,
                                       int localRank, TcpOptions ring, TimeSpan timeout) => backend switch
    {
        Backend.Nccl => NcclCommunicator.Create(rendezvous, groupKey, rank, worldSize, localRank, timeout),
        Backend.Tcp => TcpRingCommunicator.Create(rendezvous, groupKey, rank, worldSize, ring),
        _ => throw new ArgumentOutOfRangeException(nameof(backend), backend, "not a backend"),
    };
}
