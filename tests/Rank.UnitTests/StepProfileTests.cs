// The step profile on the CPU: every phase present and timed, the phases adding up to the step, and a profiled step equal to an unprofiled one.
using System.Diagnostics;
using Rank.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Rank.UnitTests;

public class StepProfileTests(ITestOutputHelper log)
{
    static readonly string[] StepPhases =
    [
        "inputs", "embedding", "block 0: attention", "block 0: MLP", "blocks 1.. and ln_f", "head and loss",
        "backward: head and loss", "backward: blocks and embedding", "gradient reduction", "clip", "optimizer", "centering",
    ];

    [Fact]
    public void Every_phase_is_timed_in_step_order_non_negative_and_the_phases_add_up_to_the_step()
    {
        using var temp = new TempDirectory();
        using var trainer = new Trainer(TestConfigs.Tiny(temp.Path, steps: 4).WithTrain(t => t with { GradAccum = 2 }));
        using var profile = new StepProfile(CPU);
        trainer.Step(0);
        var outside = Stopwatch.StartNew();
        profile.Profile(trainer, first: 1, count: 3);
        double wall = outside.Elapsed.TotalMilliseconds / 3;

        var writer = new StringWriter();
        profile.Write(writer, "tiny");
        log.WriteLine(writer.ToString());
        Assert.False(profile.Events);
        Assert.Equal(3, profile.Steps);
        Assert.Equal(StepPhases, profile.Phases.Select(p => p.Phase));
        Assert.All(profile.Phases, p => Assert.True(p.Ms >= 0, $"{p.Phase}: {p.Ms} ms"));
        double sum = profile.Phases.Sum(p => p.Ms);
        Assert.Equal(profile.DeviceMs / 3, sum, 6);
        Assert.InRange(sum, 0.8 * wall - 2, wall);
        Assert.True(profile.TensorsCreated > 0);
        Assert.Contains("| block 0: MLP |", writer.ToString());
    }

    [Fact]
    public void A_profiled_step_gives_bit_for_bit_the_results_of_an_unprofiled_one()
    {
        using var temp = new TempDirectory();
        var config = TestConfigs.Tiny(temp.Path, steps: 3).WithTrain(t => t with { GradAccum = 2 });
        using var plain = new Trainer(config);
        using var profiled = new Trainer(config);
        using var profile = new StepProfile(CPU);
        profiled.Profiler = profile;
        for (int step = 0; step < 3; step++)
        {
            profile.BeginStep();
            var a = plain.Step(step);
            var b = profiled.Step(step);
            profile.EndStep();
            Assert.Equal(a.CrossEntropy, b.CrossEntropy);
            Assert.Equal(a.GradNorm, b.GradNorm);
            Assert.Equal(a.Stats!.MaxAbsLogit, b.Stats!.MaxAbsLogit);
        }
        Assert.Equal(0, Tensors.MaxParameterDifference(plain.Model, profiled.Model));
        Assert.Equal(StepPhases, profile.Phases.Select(p => p.Phase));
    }

    [Fact]
    public void Marks_outside_a_profiled_step_are_ignored()
    {
        using var temp = new TempDirectory();
        using var trainer = new Trainer(TestConfigs.Tiny(temp.Path, steps: 2));
        using var profile = new StepProfile(CPU);
        trainer.Profiler = profile;
        trainer.Evaluate(); // the model's forward marks its phases: no step is open
        Assert.Equal(0, profile.Steps);
        Assert.Empty(profile.Phases);
    }
}
