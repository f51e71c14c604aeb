// Checkpoints through JobState and CheckpointCatalog: committed once every rank's part is on disk, pruned to the newest
// job.keep_checkpoints (corrupt ones moved aside, never deleted), corrupt ones skipped on resume, bad file entries refused, an existing run never overwritten.
using Job;
using Grpc.Core;
using ProtoFile = Coordinator.Protocol.CheckpointFile;

namespace Coordinator.UnitTests;

public sealed class CheckpointTests
{
    static string Manifest(TestJob job, long step) => Path.Combine(job.State.Catalog.DirectoryFor(step), CheckpointCatalog.ManifestName);

    [Fact]
    public async Task Only_the_last_ranks_commit_completes_the_checkpoint()
    {
        using var job = new TestJob();
        await job.RegisterAll();

        var first = job.Commit(1, 0, 4, job.WriteCheckpointFile(4, "rank0.bin", 100));
        Assert.False(first.Committed);
        Assert.False(File.Exists(Manifest(job, 4)));
        Assert.Null(job.State.Catalog.LatestValid());

        var second = job.Commit(1, 1, 4, job.WriteCheckpointFile(4, "rank1.bin", 120));
        Assert.True(second.Committed);
        Assert.True(File.Exists(Manifest(job, 4)));

        var latest = job.State.Catalog.LatestValid();
        Assert.NotNull(latest);
        var (manifest, dir) = latest.Value;
        Assert.Equal(job.State.Catalog.DirectoryFor(4), dir);
        Assert.Equal(4, manifest.Step);
        Assert.Equal(TestJob.JobId, manifest.JobId);
        Assert.Equal(1, manifest.Generation);
        Assert.Equal(TestJob.World, manifest.WorldSize);
        Assert.Equal(TestJob.NewBatchPlan().CursorAt(4), (manifest.Epoch, manifest.Position));
        Assert.Equal(["rank0.bin", "rank1.bin"], manifest.Files.Select(f => f.Name).Order());
        Assert.Equal(TestJob.ConfigJson, manifest.Config);
    }

    [Fact]
    public async Task Only_the_newest_keep_checkpoints_remain_and_older_uncommitted_directories_go()
    {
        using var job = new TestJob(new JobOptions { KeepCheckpoints = 2 });
        await job.RegisterAll();
        var catalog = job.State.Catalog;

        Assert.True(job.CommitBoth(1, 2).Rank1.Committed);
        Assert.True(job.CommitBoth(1, 4).Rank1.Committed);
        Assert.True(Directory.Exists(catalog.DirectoryFor(2)));

        job.WriteCheckpointFile(5, "rank0.bin", 10); // a checkpoint some rank began but that was never committed
        job.WriteCheckpointFile(8, "rank0.bin", 10); // one being written right now, newer than the commit below
        Assert.True(job.CommitBoth(1, 6).Rank1.Committed);

        Assert.False(Directory.Exists(catalog.DirectoryFor(2)));
        Assert.True(File.Exists(Manifest(job, 4)));
        Assert.True(File.Exists(Manifest(job, 6)));
        Assert.False(Directory.Exists(catalog.DirectoryFor(5)));
        Assert.True(Directory.Exists(catalog.DirectoryFor(8)));
        Assert.Equal(["step_00000004", "step_00000006", "step_00000008"],
            Directory.GetDirectories(catalog.Root).Select(Path.GetFileName).Order());
    }

    [Fact]
    public async Task Rotation_moves_a_corrupt_or_incomplete_checkpoint_aside_instead_of_deleting_it()
    {
        using var job = new TestJob(new JobOptions { KeepCheckpoints = 1 });
        await job.RegisterAll();
        var catalog = job.State.Catalog;
        job.CommitBoth(1, 2);
        job.CommitBoth(1, 4);
        Assert.False(Directory.Exists(catalog.DirectoryFor(2))); // valid and superseded: deleted
        string torn = Path.Combine(catalog.DirectoryFor(4), "rank1.bin");
        File.AppendAllText(torn, "x");
        byte[] tornBytes = File.ReadAllBytes(torn);

        job.CommitBoth(1, 6);
        File.Delete(Path.Combine(catalog.DirectoryFor(6), "rank0.bin"));
        job.CommitBoth(1, 8);

        string corrupt = Path.Combine(catalog.Root, "corrupt");
        Assert.Equal(["step_00000004", "step_00000006"], Directory.GetDirectories(corrupt).Select(Path.GetFileName).Order());
        Assert.Equal(tornBytes, File.ReadAllBytes(Path.Combine(corrupt, "step_00000004", "rank1.bin")));
        Assert.True(File.Exists(Path.Combine(corrupt, "step_00000006", CheckpointCatalog.ManifestName)));
        Assert.Equal(["step_00000008"], Directory.GetDirectories(catalog.Root, "step_*").Select(Path.GetFileName));
        string log = job.LogText();
        Assert.Contains($"checkpoint {catalog.DirectoryFor(4)} fails its checks (rank1.bin has", log);
        Assert.Contains($"checkpoint {catalog.DirectoryFor(6)} fails its checks (rank0.bin is missing): moved to {Path.Combine(corrupt, "step_00000006")}", log);
    }

    [Fact]
    public async Task The_newest_committed_checkpoint_names_the_job_a_resume_keeps()
    {
        using var job = new TestJob();
        await job.RegisterAll();
        Assert.Null(job.State.Catalog.NewestJobId());

        job.CommitBoth(1, 2);

        Assert.Equal(TestJob.JobId, job.State.Catalog.NewestJobId());
    }

    [Fact]
    public async Task A_corrupt_newest_checkpoint_is_skipped_and_the_next_generation_resumes_from_the_previous_one()
    {
        using var job = new TestJob();
        await job.RegisterAll();
        job.CommitBoth(1, 2);
        job.CommitBoth(1, 4);
        var catalog = job.State.Catalog;
        Assert.Equal(4, catalog.LatestValid()?.Manifest.Step);

        string victim = Path.Combine(catalog.DirectoryFor(4), "rank1.bin");
        byte[] bytes = File.ReadAllBytes(victim);
        bytes[bytes.Length / 2] ^= 0x01;
        File.WriteAllBytes(victim, bytes);

        var latest = catalog.LatestValid();
        Assert.NotNull(latest);
        Assert.Equal(2, latest.Value.Manifest.Step);
        Assert.Equal(catalog.DirectoryFor(2), latest.Value.Directory);
        string log = job.LogText();
        Assert.Contains($"skipping checkpoint {catalog.DirectoryFor(4)}: rank1.bin", log);
        Assert.Contains("corrupt", log);

        job.ReportFailure(1, 0, "NCCL error");
        var replies = await job.RegisterAll();

        Assert.All(replies, r =>
        {
            Assert.Equal(2, r.Generation);
            Assert.Equal(2, r.StartStep);
            Assert.Equal(catalog.DirectoryFor(2), r.ResumeFrom);
        });
    }

    [Theory]
    [InlineData("../x", null)]
    [InlineData("sub/x", null)]
    [InlineData(".hidden", null)]
    [InlineData("manifest.json", null)]
    [InlineData("x.bin", "abc123")]
    [InlineData("x.bin", "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855")]
    public async Task A_bad_file_name_or_checksum_is_invalid_argument(string name, string? sha256)
    {
        using var job = new TestJob();
        await job.RegisterAll();
        var file = new ProtoFile { Name = name, Bytes = 0, Sha256 = sha256 ?? new string('0', 64) };

        var e = Assert.Throws<RpcException>(() => job.Commit(1, 0, 2, file));

        Assert.Equal(StatusCode.InvalidArgument, e.StatusCode);
        Assert.Contains(sha256 ?? name, e.Status.Detail);
        Assert.Contains("refused (InvalidArgument): commit", job.LogText());
    }

    [Fact]
    public async Task A_file_missing_on_disk_is_not_committed()
    {
        using var job = new TestJob();
        await job.RegisterAll();
        job.Commit(1, 0, 2, job.WriteCheckpointFile(2, "rank0.bin", 100));
        var phantom = new ProtoFile { Name = "rank1.bin", Bytes = 5, Sha256 = new string('0', 64) };

        var e = Assert.Throws<RpcException>(() => job.Commit(1, 1, 2, phantom));

        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Contains("rank1.bin", e.Status.Detail);
        Assert.False(File.Exists(Manifest(job, 2)));
    }

    /// <summary>Rotation reads a superseded checkpoint whole before deleting it (minutes for a large model): on a task
    /// of its own, so that the commit answers the ranks within their deadline and heartbeats go on meanwhile. A FIFO as
    /// the checkpoint's file holds the read until the test writes to it.</summary>
    [Fact]
    public async Task A_commit_answers_and_heartbeats_go_on_while_rotation_still_reads_the_checkpoint_it_retires()
    {
        using var job = new TestJob(new JobOptions { KeepCheckpoints = 1 });
        await job.RegisterAll();
        string dir = job.State.Catalog.DirectoryFor(2), fifo = Path.Combine(dir, "rank0.bin");
        Directory.CreateDirectory(dir);
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", fifo)) mkfifo.WaitForExit();
        string emptySha = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData([]));
        job.Commit(1, 0, 2, new ProtoFile { Name = "rank0.bin", Bytes = 0, Sha256 = emptySha });
        job.Commit(1, 1, 2, job.WriteCheckpointFile(2, "rank1.bin", 120));

        Assert.True(job.Commit(1, 0, 4, job.WriteCheckpointFile(4, "rank0.bin", 100)).Committed is false);
        Assert.True(job.Commit(1, 1, 4, job.WriteCheckpointFile(4, "rank1.bin", 120)).Committed); // answered: step 2's read waits on the FIFO
        job.Heartbeat(1, 0, 4);
        Assert.False(job.State.Rotation.IsCompleted);
        Assert.True(Directory.Exists(dir));

        await File.WriteAllBytesAsync(fifo, []).Within(); // the read sees an empty file: the checkpoint checks out and goes
        await job.State.Rotation.Within();
        Assert.False(Directory.Exists(dir));
    }

    [Fact]
    public async Task A_registration_after_the_job_ended_is_refused_with_how_it_ended()
    {
        await using var grpc = await GrpcJob.StartAsync();
        await grpc.Job.RegisterAll();
        grpc.Job.State.Abort("test abort");

        var e = await Assert.ThrowsAsync<RpcException>(() => grpc.Client.RegisterAsync(TestJob.RegisterRequest(0, pid: 4242), GrpcJob.Call()).ResponseAsync.Within());

        Assert.Equal(StatusCode.FailedPrecondition, e.StatusCode);
        Assert.Equal("failed", e.Trailers.GetValue(JobRefusal.OverTrailer)); // the rank exits 2, not 0
    }

    /// <summary>A first run in `dir` that committed its checkpoint at step 6.</summary>
    static async Task CommitAtStep6(string dir)
    {
        using var first = new TestJob(outDir: dir);
        await first.RegisterAll();
        Assert.True(first.CommitBoth(1, 6).Rank1.Committed);
    }

    [Fact]
    public async Task An_out_dir_with_a_committed_checkpoint_needs_resume()
    {
        using var dir = new TempDir();
        await CommitAtStep6(dir.Path);

        using (var log = new JobLog(null, null))
        {
            var e = Assert.Throws<ArgumentException>(() => new JobState(TestJob.SpecFor(dir.Path, new JobOptions()), log));
            Assert.Contains("job.resume", e.Message);
        }

        using var resumed = new TestJob(new JobOptions { Resume = ResumeMode.Yes }, outDir: dir.Path);
        var replies = await resumed.RegisterAll();
        Assert.All(replies, r =>
        {
            Assert.Equal(6, r.StartStep);
            Assert.Equal(resumed.State.Catalog.DirectoryFor(6), r.ResumeFrom);
        });
    }

    [Fact]
    public async Task A_resume_is_refused_when_the_checkpoints_model_or_data_section_differs()
    {
        using var dir = new TempDir();
        await CommitAtStep6(dir.Path);
        using var log = new JobLog(null, null);
        var resume = TestJob.SpecFor(dir.Path, new JobOptions { Resume = ResumeMode.Yes });

        // The check is given the checkpoint's configuration; its message is the refusal's reason.
        string? seen = null;
        var e = Assert.Throws<ArgumentException>(() => new JobState(resume with { ResumeConflict = saved => (seen = saved) is null ? null : "its data section differs" }, log));
        Assert.Equal(TestJob.ConfigJson, seen);
        Assert.StartsWith($"cannot resume from {Path.Combine(dir.Path, "checkpoints")}", e.Message);
        Assert.EndsWith(": its data section differs", e.Message);
        using var accepted = new JobState(resume with { ResumeConflict = _ => null }, log);
        Assert.Equal(JobPhase.Registering, accepted.Phase);
    }

    [Fact]
    public void A_fresh_job_into_a_directory_that_holds_a_finished_run_without_checkpoints_is_refused_naming_what_is_there()
    {
        using var dir = new TempDir();
        File.WriteAllText(Path.Combine(dir.Path, "metrics.jsonl"), "");
        File.WriteAllText(Path.Combine(dir.Path, "model.safetensors"), "");
        using var log = new JobLog(null, null);

        var e = Assert.Throws<ArgumentException>(() => new JobState(TestJob.SpecFor(dir.Path, new JobOptions()), log));

        Assert.Contains($"run.out_dir = '{dir.Path}' holds a run (metrics.jsonl, model.safetensors)", e.Message);
        Assert.Contains("choose another run.out_dir", e.Message);
        Assert.True(File.Exists(Path.Combine(dir.Path, "model.safetensors"))); // nothing touched
    }

    [Fact]
    public async Task A_resume_whose_checkpoints_are_all_broken_is_refused_and_keeps_them()
    {
        using var dir = new TempDir();
        await CommitAtStep6(dir.Path);
        string checkpoint = Path.Combine(dir.Path, "checkpoints", "step_00000006");
        string file = Directory.GetFiles(checkpoint).First(f => !f.EndsWith(CheckpointCatalog.ManifestName));
        File.AppendAllText(file, "torn");
        using var log = new JobLog(null, null);

        var e = Assert.Throws<ArgumentException>(() => new JobState(TestJob.SpecFor(dir.Path, new JobOptions { Resume = ResumeMode.Yes }), log));

        Assert.Contains("none of the checkpoints in", e.Message);
        Assert.Contains("step_00000006", e.Message);
        Assert.True(Directory.Exists(checkpoint));

    }

    [Fact]
    public void With_nothing_to_resume_true_is_refused_naming_the_directory_and_auto_starts_at_step_0()
    {
        using var empty = new TempDir(); // a mistyped run.out_dir, or a run that never checkpointed
        using var log = new JobLog(null, null);

        var e = Assert.Throws<ArgumentException>(() => new JobState(TestJob.SpecFor(empty.Path, new JobOptions { Resume = ResumeMode.Yes }), log));
        Assert.Contains($"job.resume = true, but run.out_dir = '{empty.Path}' holds no checkpoint", e.Message);
        Assert.Contains("job.resume=auto", e.Message);

        using var fresh = new JobState(TestJob.SpecFor(empty.Path, new JobOptions { Resume = ResumeMode.Auto }), log); // a cluster job's first start
        Assert.Equal(JobPhase.Registering, fresh.Phase);
    }

    [Fact]
    public void Auto_into_a_directory_holding_a_run_without_checkpoints_is_refused_as_a_fresh_job_is()
    {
        using var dir = new TempDir();
        File.WriteAllText(Path.Combine(dir.Path, "metrics.jsonl"), "");
        using var log = new JobLog(null, null);

        var e = Assert.Throws<ArgumentException>(() => new JobState(TestJob.SpecFor(dir.Path, new JobOptions { Resume = ResumeMode.Auto }), log));

        Assert.Contains("holds a run (metrics.jsonl) but no checkpoint to continue it from", e.Message);

        // Unless it is this job's own start, which ended before its first checkpoint (its coordinator was killed).
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), $$"""{ "job": { "id": "{{TestJob.JobId}}" } }""");
        using var again = new JobState(TestJob.SpecFor(dir.Path, new JobOptions { Resume = ResumeMode.Auto }), log);
        Assert.Equal(JobPhase.Registering, again.Phase);
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), """{ "job": { "id": "another-job" } }""");
        e = Assert.Throws<ArgumentException>(() => new JobState(TestJob.SpecFor(dir.Path, new JobOptions { Resume = ResumeMode.Auto }), log));
        Assert.Contains("holds a run (config.json, metrics.jsonl)", e.Message);
    }
}
