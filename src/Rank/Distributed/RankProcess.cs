// One rank process under a coordinator: register, connect the collectives, train, report.
using Job;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using Grpc.Core;
using Rank.Configuration;
using Rank.Parallel;
using Rank.Training;

namespace Rank.Distributed;

public static class RankProcess
{
    /// <summary>
    /// Environment: OEC_JOB_ID, OEC_JOB_TOKEN; the coordinator (unless given) and this rank's place, read by
    /// <see cref="RankEnvironment"/> from OEC_COORDINATOR, torchrun's or Slurm's variables: the rank to ask for, the world
    /// size (checked against the job's), the local rank (the GPU for NCCL), the local world size (ranks sharing this
    /// machine's cores); OEC_RANK_HOST, the address peers reach this rank at (default: loopback when the coordinator is
    /// on loopback, else this host's first IPv4 address); OEC_RING_BIND, the address the TCP ring listens on (default:
    /// OEC_RANK_HOST when it is a loopback address, else every interface). The ring's links prove OEC_JOB_TOKEN. Exit
    /// codes (<see cref="ExitCodes"/>): Success done or stopped, Failed, Refused (registration refused, or bad configuration or data found while training), Restart (told
    /// to restart or abort), LostCoordinator.
    /// </summary>
    public static int Run(string? coordinator, TextWriter console)
    {
        var (uri, requested, worldSize, localRank, localWorld, source) = RankEnvironment.Resolve(coordinator, RankEnvironment.Current());
        console.WriteLine($"rank: asking {uri} for {(requested >= 0 ? $"rank {requested}" : "a rank")} of {(worldSize > 0 ? $"{worldSize}" : "the job's")} " +
                          $"(local rank {localRank} of {localWorld}; placement from {source})");
        string jobId = Env("OEC_JOB_ID") ?? throw new ArgumentException("OEC_JOB_ID is not set: the rank must name its job");
        string token = Env("OEC_JOB_TOKEN") ?? throw new ArgumentException("OEC_JOB_TOKEN is not set: the rank needs the job token");
        string host = Env("OEC_RANK_HOST") ?? DefaultHost(uri);
        var ring = new Collectives.TcpOptions(token, Host: host, Bind: Address("OEC_RING_BIND"));

        using var client = new CoordinatorClient(uri, jobId, token);
        Coordinator.Protocol.RegisterReply registration;
        var unreachableFor = TimeSpan.FromSeconds(Double("OEC_REGISTER_TIMEOUT_S") ?? 120); // job.rendezvous_timeout_s's default: the job's own is not known yet
        try
        {
            registration = client.Register(requested, worldSize, host, TimeSpan.FromMinutes(30), unreachableFor);
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable)
        {
            console.WriteLine($"rank: no coordinator answered at {uri} for {unreachableFor.TotalSeconds:0} s (OEC_REGISTER_TIMEOUT_S): {e.Status.Detail}; exiting");
            return ExitCodes.LostCoordinator; // a supervisor starts it again: the coordinator may come back
        }
        catch (RpcException e)
        {
            int exit = RegistrationRefused(e.StatusCode, e.Trailers.GetValue(Coordinator.JobRefusal.OverTrailer));
            console.WriteLine($"rank: registration with {uri} refused: {e.Status.StatusCode}: {e.Status.Detail}; exiting with {exit}");
            return exit;
        }
        int rank = registration.Rank;
        var config = RunConfig.FromJson(registration.ConfigJson);
        if (config.Train.Threads == 0)
            config = config with { Train = config.Train with { Threads = Threads(Environment.ProcessorCount, localWorld, Env("SLURM_CPUS_PER_TASK")) } };

        using var session = new RemoteSession(client, registration, config.Run.OutDir!, console);
        // Ctrl+C in a terminal reaches the launcher and its ranks alike, SIGTERM a rank whose machine is taken away
        // (Slurm's preemption, `--local-ranks` passing on its pod's): the rank votes to stop at a checkpoint, and the job
        // ends there if the coordinator was asked to stop too, else continues from it; a second signal ends it at once.
        int interrupts = 0;
        void Interrupted(PosixSignalContext signal)
        {
            signal.Cancel = Interlocked.Increment(ref interrupts) == 1;
            session.RequestStop();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Interrupted);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Interrupted);
        try
        {
            MemoryBudget.Check(config, ranksHere: localWorld); // before any allocation: a model too large fails the job, not a restart
            TorchRuntime.EnsureLoaded();
            var timeout = TimeSpan.FromSeconds(config.Job.RendezvousTimeoutS);
            var backend = Communicators.Parse(registration.Bootstrap.Backend);
            if (backend == Backend.Nccl) ComputeDevice.Select(config.Train.Device, localRank); // a GPU that is not there, named before NCCL meets it
            using var comm = Communicators.Create(backend, client, registration.Bootstrap.GroupKey, rank, registration.WorldSize, localRank,
                                                  ring with { Timeout = RingTimeout(config.Job) }, timeout);
            var gpu = backend == Backend.Tcp && config.Train.Device == "cuda" ? ComputeDevice.SharedGpu(localRank) : localRank;
            if (!(registration.LearningRateScale > 0 && registration.LearningRateScale <= 1))
                throw new InvalidOperationException($"the coordinator sent learning_rate_scale = {registration.LearningRateScale}: expected (0, 1]");
            using var trainer = new Trainer(config, comm, client.Rows, gpu) { LearningRateScale = registration.LearningRateScale };
            string fingerprint = trainer.Data.Train.Fingerprint();
            if (fingerprint != registration.PlanFingerprint || trainer.Data.Train.Count != registration.PlanSequences)
                throw new InvalidOperationException($"rank {rank} cut its data into {trainer.Data.Train.Count} sequences ({fingerprint}), the coordinator into " +
                                                    $"{registration.PlanSequences} ({registration.PlanFingerprint}): they do not see the same data files");
            var result = trainer.Run(console, session);
            session.Flush();
            var finish = client.Finish(result.Steps, result.FinalTrainLoss, result.FinalValLoss, result.Stopped);
            if (finish.Command == Coordinator.Protocol.Command.Restart)
            {
                console.WriteLine($"rank {rank}: the coordinator says restart: {finish.Reason}; exiting");
                return ExitCodes.Restart;
            }
            return ExitCodes.Success;
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.Aborted)
        {
            console.WriteLine($"rank {rank}: the coordinator ended this generation: {e.Status.Detail}; exiting");
            return ExitCodes.Restart;
        }
        catch (RpcException e) when (e.StatusCode is StatusCode.Unavailable or StatusCode.DeadlineExceeded)
        {
            console.WriteLine($"rank {rank}: lost the coordinator at {uri}: {e.Status.StatusCode}: {e.Status.Detail}; exiting");
            return ExitCodes.LostCoordinator;
        }
        catch (Exception e)
        {
            var kind = FailureClassifier.Classify(e);
            console.WriteLine($"rank {rank}: failed ({Describe(kind)}): {(Env("OEC_TRACE") == "1" ? e.ToString() : e.Message)}");
            client.TryReportFailure(e.Message, kind);
            // A lost peer ends this generation through no fault of this rank: its supervisor may start it again (with the
            // coordinator gone too, no one else would say so).
            return kind switch { FailureClass.Configuration => ExitCodes.Refused, FailureClass.PeerLost => ExitCodes.Restart, _ => ExitCodes.Failed };
        }
    }

    /// <summary>How long the TCP ring waits for a peer's data: job.step_timeout_s, at least the ring's own 60 s. The
    /// ranks other than data-rank 0 go on into the next step's all-reduce while it still writes and hashes a
    /// checkpoint's model and optimizer (tens of GB for a large model); the step timeout is how long a step may take
    /// anyway before the coordinator calls the generation hung.</summary>
    public static TimeSpan RingTimeout(Job.JobOptions job) =>
        TimeSpan.FromSeconds(Math.Max(Collectives.TcpOptions.DefaultTimeout.TotalSeconds, job.StepTimeoutS));

    /// <summary>The exit code of a rank whose registration was refused. The generation it waited for ended (Aborted:
    /// a rendezvous timeout, a failure), or its place is still held (AlreadyExists, ResourceExhausted: a replacement that
    /// came before its predecessor was found lost), or its wait ran out (DeadlineExceeded): a later generation takes it,
    /// so its supervisor starts it again (4; Kubernetes' pod failure policy ignores it). A job that is over: 0 if it
    /// succeeded or stopped (nothing left to do), 2 if it failed or diverged. Anything else (the token, the job id, the
    /// world size) is the configuration: 2, not retried.</summary>
    public static int RegistrationRefused(StatusCode status, string? over) => status switch
    {
        StatusCode.Aborted or StatusCode.AlreadyExists or StatusCode.ResourceExhausted or StatusCode.DeadlineExceeded => ExitCodes.Restart,
        StatusCode.FailedPrecondition when over is "succeeded" or "stopped" => ExitCodes.Success,
        _ => ExitCodes.Refused,
    };

    /// <summary>libtorch threads for a rank when train.threads is 0: Slurm's --cpus-per-task where Slurm gives it (each
    /// task has cores of its own), else the cores this process may use (its affinity and cgroup) shared by the
    /// <paramref name="localWorld"/> ranks on this machine, which share them (a pod's ranks, a local job's).</summary>
    public static int Threads(int processorCount, int localWorld, string? slurmCpusPerTask) =>
        int.TryParse(slurmCpusPerTask, out int perTask) && perTask > 0 ? Math.Min(perTask, processorCount)
            : Math.Max(1, processorCount / Math.Max(1, localWorld));

    static string Describe(FailureClass kind) => kind switch
    {
        FailureClass.Configuration => "bad configuration or data, not restarted",
        FailureClass.Resource => "out of a resource, not restarted",
        FailureClass.PeerLost => "lost a peer",
        _ => "may be restarted",
    };

    static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

    static double? Double(string name) => Env(name) is { } v
        ? double.TryParse(v, System.Globalization.CultureInfo.InvariantCulture, out double x) && x >= 0 ? x
            : throw new ArgumentException($"{name} = '{v}': not a number of seconds >= 0")
        : null;

    static IPAddress? Address(string name) => Env(name) is { } v
        ? IPAddress.TryParse(v, out var ip) && ip.AddressFamily == AddressFamily.InterNetwork ? ip
            : throw new ArgumentException($"{name} = '{v}': not an IPv4 address")
        : null;

    static string DefaultHost(Uri coordinator)
    {
        if (coordinator.IsLoopback) return "127.0.0.1";
        return Dns.GetHostAddresses(Dns.GetHostName()).FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork && !IPAddress.IsLoopback(a))?.ToString()
               ?? Dns.GetHostName();
    }
}
