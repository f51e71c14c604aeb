// python/oec_gpt.py, the shipped loader, on model.safetensors files that `oecrun train` wrote: PyTorch builds the model
// from the stored configuration alone, and its loss on a batch equals ours.
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Oec;
using OecRun.Launching;
using Rank.Configuration;
using Rank.Model;
using Rank.Training;
using static TorchSharp.torch;

namespace OecRun.FunctionalTests;

public class PyTorchLoaderTests(Xunit.Abstractions.ITestOutputHelper log)
{
    const int B = 2, T = 32;
    // fp32 on both sides with other kernels (Debian's torch 1.13): the loss differs by rounding, a few ulps per operation.
    const double Tolerance = 1e-5;
    static readonly string Loader = Path.Combine(TestPrograms.RepositoryRoot, "python", "oec_gpt.py");

    [Theory]
    [InlineData("mu_centering", false)]
    [InlineData("mu_loss", true)]
    [InlineData("z_loss", false)]
    [InlineData("soft_cap", true)]
    public void The_loaders_loss_on_a_batch_equals_ours_for_a_trained_model(string method, bool tied)
    {
        using var temp = new TempDirectory();
        string model = Train(temp, method, tied);
        var config = RunConfig.FromJson(Checkpoint.ReadConfig(model));
        using var gpt = new Gpt(config.Model, config.Data.ResolvedVocabSize, config.Train.SequenceLength);
        Checkpoint.Load(gpt, model);
        var random = new Random(22);
        long[][] inputs = Rows(random, config.Data.ResolvedVocabSize), targets = Rows(random, config.Data.ResolvedVocabSize);
        File.WriteAllText(temp.File("batch.json"), JsonSerializer.Serialize(new { inputs, targets }));

        var theirs = RunLoader(model, "--batch", temp.File("batch.json"));
        var (loss, crossEntropy) = OurLoss(gpt, config, inputs, targets);

        Assert.Equal((gpt.VocabSize, tied, method), (theirs["vocab"]!.GetValue<int>(), theirs["tied"]!.GetValue<bool>(), theirs["method"]!.GetValue<string>()));
        Assert.Equal(gpt.parameters().Sum(p => p.numel()), theirs["parameters"]!.GetValue<long>());
        foreach (var (name, ours) in new[] { ("loss", loss), ("cross_entropy", crossEntropy) })
        {
            double their = theirs[name]!.GetValue<double>();
            log.WriteLine($"{name}: ours {ours:R}, PyTorch's {their:R}");
            Assert.True(Math.Abs(ours - their) <= Tolerance * Math.Abs(ours), $"{name}: ours {ours:R}, PyTorch's {their:R} (tolerance {Tolerance} relative)");
        }
        if (method is "mu_loss" or "z_loss") Assert.True(loss > crossEntropy, "the method's term is part of the loss");
    }

    [Fact]
    public void A_file_without_oecruns_configuration_exits_2_naming_the_file()
    {
        using var temp = new TempDirectory();
        using var gpt = new Gpt(new ModelOptions(), 64, 8);
        string file = temp.File("bare.safetensors");
        Checkpoint.Save(gpt, "{}", file);

        var (code, error) = RunLoaderFailing(file);

        Assert.Equal(2, code);
        Assert.Contains($"{file}: its configuration lacks the section(s) model, data, train, oec", error);
    }

    static long[][] Rows(Random random, int vocab) => [.. Enumerable.Range(0, B).Select(_ => Enumerable.Range(0, T).Select(_ => (long)random.Next(vocab)).ToArray())];

    /// <summary>The training loss and cross-entropy as the trainer computes them: the fused head with the run's method.</summary>
    static (double Loss, double CrossEntropy) OurLoss(Gpt gpt, RunConfig config, long[][] inputs, long[][] targets)
    {
        using var _ = no_grad();
        using var x = tensor(inputs.SelectMany(r => r).ToArray()).view(B, T);
        using var y = tensor(targets.SelectMany(r => r).ToArray());
        using var hidden = gpt.forward(x).view(B * T, gpt.Dim);
        var head = ChunkedHead.Loss(hidden, gpt.OutputEmbedding, y, config.Oec.Resolve(), new LocalVocabulary(gpt.VocabSize), ScalarType.Float32, chunkTokens: 16);
        return (head.Loss.item<float>(), head.CrossEntropy.item<float>());
    }

    /// <summary>A tiny `oecrun train` run of a few steps; its model.safetensors.</summary>
    string Train(TempDirectory temp, string method, bool tied)
    {
        using var train = ChildProcesses.Start(Launch.SelfCommand(
            "train", $"oec.method={method}", $"model.weight_tying={tied.ToString().ToLowerInvariant()}", "job.world_size=1", "train.steps=4",
            // The regularisers large enough that their terms show in an fp32 loss (the paper's 1e-4 would hide a wrong one).
            "oec.mu_loss_lambda=1", "oec.z_loss_lambda=0.1", "train.warmup_steps=1", "train.batch_size=4", $"train.sequence_length={T}", "train.eval_every=0", "data.synthetic_tokens=20000",
            "run.out_dir=" + temp.File("run")), []);
        string output = train.StandardOutput.ReadToEnd() + train.StandardError.ReadToEnd();
        Assert.True(train.WaitForExit(TimeSpan.FromMinutes(2)), "oecrun train still runs after 2 minutes");
        Assert.True(train.ExitCode == 0, output);
        return temp.File("run/model.safetensors");
    }

    static JsonNode RunLoader(params string[] args)
    {
        var (code, output, error) = Python(args);
        Assert.True(code == 0, $"oec_gpt.py exited with {code}: {error}");
        return JsonNode.Parse(output)!;
    }

    static (int Code, string Error) RunLoaderFailing(string file)
    {
        var (code, _, error) = Python(file);
        return (code, error);
    }

    static (int Code, string Output, string Error) Python(params string[] args)
    {
        using var python = Process.Start(new ProcessStartInfo(TestPrograms.RequirePythonTorch(), [Loader, .. args]) { RedirectStandardOutput = true, RedirectStandardError = true })!;
        var output = python.StandardOutput.ReadToEndAsync();
        var error = python.StandardError.ReadToEndAsync();
        if (!python.WaitForExit(TimeSpan.FromMinutes(2))) python.Kill(entireProcessTree: true);
        Assert.True(python.HasExited, "oec_gpt.py still runs after 2 minutes");
        return (python.ExitCode, output.Result, error.Result);
    }
}
