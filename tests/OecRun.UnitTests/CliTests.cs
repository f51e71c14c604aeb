// oecrun's command line in process: exit codes and messages for bad settings and options, and the report command; the
// train runs that start rank processes are in OecRun.FunctionalTests.
using System.Text.RegularExpressions;
using TorchSharp;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

public class CliTests
{
    [Fact]
    public void Train_with_an_unknown_setting_exits_with_2_and_names_it()
    {
        var (code, _, error) = Invoke("train", "train.bogus=1");

        Assert.Equal(2, code);
        Assert.Contains("train.bogus", error);
        Assert.StartsWith("error: ", error);
        Assert.Single(error.Trim().Split('\n'));
    }

    [SkippableFact]
    public void Train_on_cuda_without_a_GPU_exits_with_2_before_starting_any_rank_and_says_what_it_found()
    {
        Skip.If(Rank.Training.ComputeDevice.Probe().Count > 0, "this machine has a GPU");
        using var temp = new TempDirectory();

        var (code, output, error) = Invoke("train", "train.device=cuda", "job.world_size=1", $"run.out_dir={temp.Path}");

        Assert.Equal(2, code);
        Assert.Contains("train.device = cuda for local rank 0: expected a libtorch with CUDA", error);
        Assert.Contains("0 CUDA device(s) visible", error);
        Assert.DoesNotContain("[rank 0]", output); // refused by the launcher, not by each rank and its restarts
        Assert.False(File.Exists(Path.Combine(temp.Path, "coordinator.log")));
    }

    [Theory]
    [InlineData("--precision", "fp16")]
    [InlineData("--modes", "jit")]
    public void Bench_gpu_with_an_unknown_choice_exits_with_2_and_names_it(string option, string value)
    {
        var (code, _, error) = Invoke("bench-gpu", option, value);

        Assert.Equal(2, code);
        Assert.Contains(value, error);
        Assert.Contains(option, error);
    }

    [Theory]
    [InlineData("train.batch_size=3", "job.world_size=2")]   // found by the job's spec, after the corpus is read
    [InlineData("job.resume=true", "job.world_size=2")]      // refused by the job: nothing to resume in a new directory
    public void Train_refused_for_its_configuration_leaves_no_run_directory_behind(params string[] settings)
    {
        using var temp = new TempDirectory();
        string run = temp.File("run");
        var (code, _, error) = Invoke(["train", .. settings, $"run.out_dir={run}"]);

        Assert.Equal(2, code);
        Assert.StartsWith("error: ", error);
        Assert.False(Directory.Exists(run), $"{run} was left behind: {string.Join(", ", Directory.Exists(run) ? Directory.GetFileSystemEntries(run) : [])}");
    }

    [Fact]
    public void Torch_info_prints_the_bundled_libtorchs_version_from_its_package()
    {
        var (code, output, error) = CommandLineRun.Invoke("torch-info");
        Assert.True(code == 0, $"torch-info exited with {code}: {error}");
        Assert.Contains("libtorch: bundled with oecrun", output);
        Assert.Matches($@"libtorch version: {Regex.Escape(Rank.ExternalLibTorch.ExpectedVersion)}\.\d+ \(package libtorch-\S+ in \S+\.deps\.json\)", output);
        if (!torch.cuda.is_available())                     // NVRTC without a GPU (install-test-deps installs one)
            Assert.Matches(@"nvrtc: \d+\.\d+, compiles for sm_\d+(, sm_\d+)*.* \(oecrun kernels --compile\)", output);
    }

    [Fact]
    public void Train_with_a_missing_config_file_exits_with_2_and_names_it()
    {
        using var temp = new TempDirectory();
        string missing = temp.File("nope.json");

        var (code, _, error) = Invoke("train", "--config", missing);

        Assert.Equal(2, code);
        Assert.Contains(missing, error);
    }

    [Fact]
    public void Report_of_two_runs_exits_with_0_and_writes_the_charts_into_out()
    {
        using var temp = new TempDirectory();
        string a = ReportTests.WriteRun(Directory.CreateDirectory(temp.File("a")).FullName, diverging: false);
        string b = ReportTests.WriteRun(Directory.CreateDirectory(temp.File("b")).FullName, diverging: true);
        string outDir = temp.File("charts");

        var (code, output, error) = Invoke("report", a, b, "--out", outDir, "--width", "400", "--height", "300");

        Assert.True(code == 0, $"exit code {code}: {error}");
        foreach (string png in new[] { "loss.png", "mu_norm.png", "logits.png" })
        {
            Assert.True(File.Exists(Path.Combine(outDir, png)), png);
            Assert.Contains($"wrote {Path.Combine(outDir, png)}", output);
        }
        Assert.Contains("b: 50 logged steps", output);
    }

    [Fact]
    public void Report_of_a_malformed_log_exits_with_2_and_names_the_file_and_line()
    {
        using var temp = new TempDirectory();
        string log = temp.File("metrics.jsonl");
        File.WriteAllText(log, "{\"step\": 1,\n");

        var (code, _, error) = Invoke("report", log);

        Assert.Equal(2, code);
        Assert.StartsWith($"error: {log} line 1: not a metrics record", error);
        Assert.Single(error.Trim().Split('\n'));
    }
}
