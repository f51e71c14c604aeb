// Our GPT against PyTorch itself (llm.c's test): for the same weights and batch, the same logits, loss, gradients and step.
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Nodes;
using Oec;
using Rank.UnitTests;
using Rank.Model;
using Rank.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace OecRun.FunctionalTests;

/// <summary>
/// PyTorch's results for one batch, computed once for every case: the weights of a tied and an untied model (Gpt's
/// initialisation, written by Checkpoint.Save) go to tests/OecRun.FunctionalTests/pytorch_reference.py under Debian's PyTorch
/// (python3-torch, installed like the other test programs), which writes back, per head and method, its logits, loss,
/// every gradient and every parameter after one step (safetensors; the script's docstring has the contract).
/// </summary>
public sealed class PyTorchReference : IDisposable
{
    public const int Vocab = 100, B = 2, T = 16; // 100 tokens: the embeddings' 128 rows include 28 of padding
    public static readonly ModelOptions Model = new() { NLayer = 2, DModel = 64, NHead = 4 };
    // The regularisers large enough that each moves the loss and the gradients far beyond the tolerances (the paper's
    // 1e-4 would hide a wrong mean or sum), the cap small enough that tanh bends these logits.
    public static readonly OecOptions Oec = new() { MuLossLambda = 1.0, ZLossLambda = 0.1, SoftCap = 1.0 };
    // The first AdamW step moves an element by lr * g / (|g| + eps), whose derivative in g is at most lr / eps: with
    // training's eps 1e-8 a rounding difference in a gradient near 0 (up to 3e-7 here) would come out 3e5 times larger.
    // eps 1e-2 (lr / eps = 0.3) keeps it below 1e-7; weight decay 0.1 moves every matrix by lr * 0.1 = 3e-4 of itself.
    public static readonly TrainOptions Train = new() { LearningRate = 3e-3, WeightDecay = 0.1, Beta1 = 0.9, Beta2 = 0.95, Eps = 1e-2, GradClip = 1.0 };
    public static readonly OecMethod[] Methods = Enum.GetValues<OecMethod>();

    readonly TempDirectory dir = new();

    public PyTorchReference()
    {
        var random = new Random(18);
        Inputs = Enumerable.Range(0, B * T).Select(_ => (long)random.Next(Vocab)).ToArray();
        Targets = Enumerable.Range(0, B * T).Select(_ => (long)random.Next(Vocab)).ToArray();
        foreach (bool tied in new[] { false, true })
        {
            using var gpt = new Gpt(Model with { WeightTying = tied }, Vocab, T, seed: 18);
            Checkpoint.Save(gpt, "{}", WeightsFile(tied));
        }
        File.WriteAllText(dir.File("case.json"), CaseJson());
        RunPyTorch();
    }

    /// <summary>Token ids [B * T] of the batch's inputs, row-major, and of its targets.</summary>
    public long[] Inputs { get; }
    public long[] Targets { get; }

    /// <summary>A model with the weights PyTorch was given.</summary>
    public Gpt Load(bool tied)
    {
        var gpt = new Gpt(Model with { WeightTying = tied }, Vocab, T);
        Checkpoint.Load(gpt, WeightsFile(tied));
        return gpt;
    }

    /// <summary>PyTorch's tensors for one case by name: logits, loss, cross_entropy, grad.NAME, step.NAME.</summary>
    public Dictionary<string, (long[] Shape, float[] Values)> Results(bool tied, OecMethod method) =>
        ReadSafetensors(dir.File($"{Head(tied)}.{Name(method)}.safetensors"));

    static string Head(bool tied) => tied ? "tied" : "untied";

    static string Name(OecMethod method) => JsonNamingPolicy.SnakeCaseLower.ConvertName(method.ToString());

    string WeightsFile(bool tied) => dir.File($"{Head(tied)}.safetensors");

    string CaseJson()
    {
        var m = Model.Resolve();
        return new JsonObject
        {
            ["heads"] = new JsonArray("untied", "tied"),
            ["methods"] = new JsonArray(Methods.Select(method => (JsonNode)Name(method)).ToArray()),
            ["vocab"] = m.PaddedVocab(Vocab), ["d_model"] = m.DModel, ["n_layer"] = m.NLayer, ["n_head"] = m.NHead, ["seq"] = T,
            ["inputs"] = new JsonArray(Inputs.Chunk(T).Select(row => (JsonNode)new JsonArray(row.Select(t => (JsonNode)t).ToArray())).ToArray()),
            ["targets"] = new JsonArray(Targets.Select(t => (JsonNode)t).ToArray()),
            ["lr"] = Train.LearningRate, ["beta1"] = Train.Beta1, ["beta2"] = Train.Beta2, ["eps"] = Train.Eps,
            ["weight_decay"] = Train.WeightDecay, ["grad_clip"] = Train.GradClip,
            ["mu_loss_lambda"] = Oec.MuLossLambda, ["z_loss_lambda"] = Oec.ZLossLambda, ["soft_cap"] = Oec.SoftCap,
        }.ToJsonString();
    }

    void RunPyTorch()
    {
        string script = Path.Combine(TestPrograms.RepositoryRoot, "tests", "OecRun.FunctionalTests", "pytorch_reference.py");
        var info = new ProcessStartInfo(TestPrograms.RequirePythonTorch(), [script, dir.Path]) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var python = Process.Start(info)!;
        var output = python.StandardOutput.ReadToEndAsync();
        var errors = python.StandardError.ReadToEndAsync();
        if (!python.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            python.Kill(entireProcessTree: true);
            throw new TimeoutException($"{script} did not finish within 2 min");
        }
        if (python.ExitCode != 0) throw new InvalidOperationException($"{script} exited with code {python.ExitCode}:\n{output.Result}{errors.Result}");
    }

    /// <summary>The F32 tensors of a safetensors file: an 8-byte little-endian header length, the JSON header, the data.</summary>
    static Dictionary<string, (long[] Shape, float[] Values)> ReadSafetensors(string path)
    {
        byte[] bytes = File.ReadAllBytes(path);
        int length = (int)BitConverter.ToInt64(bytes, 0);
        var header = JsonNode.Parse(bytes.AsSpan(8, length))!.AsObject();
        return header.Where(e => e.Key != "__metadata__").ToDictionary(e => e.Key, e =>
        {
            Assert.Equal("F32", e.Value!["dtype"]!.GetValue<string>());
            long[] shape = e.Value["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
            long[] at = e.Value["data_offsets"]!.AsArray().Select(o => o!.GetValue<long>()).ToArray();
            return (shape, MemoryMarshal.Cast<byte, float>(bytes.AsSpan(8 + length + (int)at[0], (int)(at[1] - at[0]))).ToArray());
        });
    }

    public void Dispose() => dir.Dispose();
}

/// <summary>
/// The model, the head and the optimizer as the trainer builds and calls them (Gpt, the fused ChunkedHead loss with
/// the resolved method (the logits from OutputEmbedding.Logits), FlatAdamW with its two weight-decay groups, clipping, the method's after-step), in fp32 on the CPU,
/// against PyTorch's own modules, F.cross_entropy and torch.optim.AdamW. Tolerance: max |ours - PyTorch's| over a
/// tensor within 1e-5 of the tensor's largest |element|. Both are fp32 with other kernels (libtorch 2.x's fused
/// attention against 1.13's explicit softmax, other matmul blocking), so each element differs by rounding: a few fp32
/// ulps (1.2e-7 relative) per operation, summed over the ~20 operations between the weights and the gradients; an error
/// in a formula (a missing scale, mean for sum, a transposed rotation, a wrong decay group) moves them by 1e-3 or more.
/// </summary>
public class PyTorchReferenceTests(PyTorchReference reference, Xunit.Abstractions.ITestOutputHelper log) : IClassFixture<PyTorchReference>
{
    const double Tolerance = 1e-5;

    public static TheoryData<OecMethod, bool> Cases()
    {
        var cases = new TheoryData<OecMethod, bool>();
        foreach (var method in PyTorchReference.Methods)
            foreach (bool tied in new[] { false, true }) cases.Add(method, tied);
        return cases;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Logits_loss_every_gradient_and_the_parameters_after_one_step_equal_PyTorchs(OecMethod method, bool tied)
    {
        var expected = reference.Results(tied, method);
        using var model = reference.Load(tied);
        var parameters = model.named_parameters().ToList();
        var oec = (PyTorchReference.Oec with { Method = method }).Resolve();
        var vocab = new LocalVocabulary(model.VocabSize);
        var train = PyTorchReference.Train;
        using var optimizer = new FlatAdamW([(model.parameters().Where(p => p.dim() >= 2).ToList(), train.WeightDecay), (model.parameters().Where(p => p.dim() < 2).ToList(), 0)],
                                            train.Beta1, train.Beta2, train.Eps);
        using var x = tensor(reference.Inputs).view(PyTorchReference.B, PyTorchReference.T);
        using var y = tensor(reference.Targets);

        var hidden = model.forward(x).view(PyTorchReference.B * PyTorchReference.T, model.Dim);
        Tensor logits;
        using (no_grad()) logits = OutputEmbedding.Logits(hidden, model.OutputEmbedding, oec, vocab, ScalarType.Float32);
        // The loss and its gradients as the trainer takes them: the fused head, in chunks of 7 of the 32 tokens (the last ragged).
        var loss = ChunkedHead.Loss(hidden, model.OutputEmbedding, y, oec, vocab, ScalarType.Float32, chunkTokens: 7);
        loss.Loss.backward();

        Assert.Equal(expected.Keys.Where(k => k.StartsWith("grad.")).Order(), parameters.Select(p => "grad." + p.name).Order()); // one to one
        Close(expected, "logits", logits);
        Close(expected, "loss", loss.Loss);
        Close(expected, "cross_entropy", loss.CrossEntropy);
        foreach (var (name, p) in parameters) Close(expected, "grad." + name, p.grad!);
        optimizer.ClipGradNorm(train.GradClip);
        optimizer.Step(train.LearningRate);
        oec.AfterStep(model.OutputEmbedding, vocab);
        foreach (var (name, p) in parameters) Close(expected, "step." + name, p);
    }

    void Close(Dictionary<string, (long[] Shape, float[] Values)> expected, string name, Tensor actual)
    {
        var (shape, theirs) = expected[name];
        Assert.Equal(shape, actual.shape);
        double[] ours = Tensors.Values(actual);
        double scale = theirs.Max(v => Math.Abs((double)v)), error = ours.Zip(theirs, (a, b) => Math.Abs(a - b)).Max();
        log.WriteLine($"{name}: max |difference| {error:G3}, {error / scale:G3} of the largest |element| {scale:G3}");
        Assert.True(error <= Tolerance * scale, $"{name}: ours differs from PyTorch's by up to {error:G3}, {error / scale:G3} of the tensor's largest |element| {scale:G3} (tolerance {Tolerance})");
    }
}
