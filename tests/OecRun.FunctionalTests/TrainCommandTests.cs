// `oecrun train` run through the command line in this process: the whole local job it starts (coordinator and rank
// processes) ends with the exit code the run earned.
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.FunctionalTests;

public class TrainCommandTests
{
    [Fact]
    public void Train_with_small_settings_exits_with_0_and_writes_the_model()
    {
        using var temp = new TempDirectory();
        string outDir = temp.File("run");

        var (code, output, error) = Invoke("train", "train.steps=3", "train.warmup_steps=1", "train.batch_size=4",
            "train.sequence_length=32", "train.eval_every=0", "train.log_every=1", "data.synthetic_tokens=20000", "run.out_dir=" + outDir);

        Assert.True(code == 0, $"exit code {code}: {error}");
        Assert.Equal("", error);
        Assert.True(File.Exists(Path.Combine(outDir, "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(outDir, "config.json")));
        Assert.Contains("done: 3 steps", output);
    }

    [Fact]
    public void Train_that_diverges_with_divergence_action_stop_exits_with_3()
    {
        using var temp = new TempDirectory();

        var (code, output, _) = Invoke("train", "oec.method=none", "train.learning_rate=1000", "train.min_learning_rate=1000",
            "train.warmup_steps=0", "train.grad_clip=0", "train.steps=50", "train.batch_size=8", "train.sequence_length=32",
            "train.eval_every=0", "data.synthetic_tokens=20000", "divergence.action=stop", "run.out_dir=" + temp.File("run"));

        Assert.Equal(3, code);
        Assert.Matches(@"diverged: divergence rule non_finite fired at step \d+: train_loss NaN; divergence.action = stop", output);
    }
}
