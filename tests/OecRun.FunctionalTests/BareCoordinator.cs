// A coordinator for one job on a loopback port without a launcher: the test starts the rank processes it wants (or
// speaks for a rank itself), and may stop the coordinator under them.
using System.Diagnostics;
using System.Net;
using Coordinator;
using Rank.Configuration;
using Rank.Training;
using OecRun.Launching;

namespace OecRun.FunctionalTests;

internal sealed class BareCoordinator : IAsyncDisposable
{
    readonly TrainingData data;
    readonly JobLog log;
    bool serving = true;

    BareCoordinator(string jobId, TrainingData data, JobLog log, JobState job, CoordinatorHost host) =>
        (JobId, this.data, this.log, Job, Host) = (jobId, data, log, job, host);

    public string JobId { get; }
    public string Token { get; } = new('t', 32);
    public JobState Job { get; }
    public CoordinatorHost Host { get; }

    /// <summary>Serves `config`'s job (job.world_size ranks, train.steps steps) under the id `jobId`.</summary>
    public static async Task<BareCoordinator> StartAsync(RunConfig config, string jobId)
    {
        var data = new TrainingData(config.Data, config.Train.SequenceLength);
        var log = new JobLog(null, null);
        var job = new JobState(new JobSpec(jobId, new string('t', 32), config.Job with { Id = jobId }, config.ToJson(),
            new Data.BatchPlan(data.Train, config.Train.BatchSize, config.Train.Seed), 1, config.Train.Steps, config.Run.OutDir!)
            { ResumeConflict = config.ResumeConflict }, log);
        return new BareCoordinator(jobId, data, log, job, await CoordinatorHost.StartAsync(job, log, IPAddress.Loopback, 0));
    }

    /// <summary>A rank process of this job, with `environment` added (RANK, say); its standard output redirected.</summary>
    public Process StartRank(Dictionary<string, string?>? environment = null) =>
        ChildProcesses.Start(Launch.SelfRankCommand(), new(environment ?? [])
        {
            ["OEC_COORDINATOR"] = Host.Address.ToString(), ["OEC_JOB_ID"] = JobId, ["OEC_JOB_TOKEN"] = Token,
        });

    /// <summary>The coordinator goes away, as a lost one does.</summary>
    public async Task StopServingAsync()
    {
        if (!serving) return;
        serving = false;
        await Host.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await StopServingAsync();
        Job.Dispose();
        log.Dispose();
        data.Dispose();
    }
}
