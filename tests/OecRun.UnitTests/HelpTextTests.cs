// The commands' help: the overrides it shows as examples are ones the command accepts.
using System.CommandLine;
using System.Text.RegularExpressions;
using OecRun.Commands;
using OecRun.Sweep;

namespace OecRun.UnitTests;

public partial class HelpTextTests
{
    // What `oecrun k8s` and `oecrun slurm` set in the configuration they render, over the file and the overrides.
    static readonly string[] RenderedKeys = ["job.world_size", "job.id", "job.backend", "job.resume", "run.out_dir", "train.device"];

    [Fact]
    public void The_sweeps_example_overrides_make_a_base_configuration_it_accepts()
    {
        var examples = Examples(SweepCommand.Create());
        Assert.NotEmpty(examples);
        Assert.DoesNotContain(examples, e => SweepOptions.SweepKeys.ContainsKey(e.Split('=')[0]));
        var config = new SweepOptions { OutDir = "runs/help", Overrides = examples }.BaseConfig(); // throws if refused
        Assert.Equal(600, config.Train.Steps);
    }

    [Fact]
    public void The_renderers_example_overrides_leave_out_the_keys_they_set_themselves()
    {
        foreach (var command in new[] { KubernetesCommand.Create(), SlurmCommand.Create() })
        {
            var examples = Examples(command);
            Assert.NotEmpty(examples);
            Assert.DoesNotContain(examples, e => RenderedKeys.Contains(e.Split('=')[0]));
        }
    }

    [Fact]
    public void The_sweeps_help_says_it_needs_at_least_two_learning_rates()
    {
        var option = SweepCommand.Create().Options.Single(o => o.Name == "--learning-rates");
        Assert.Contains("at least 2", option.Description);
    }

    /// <summary>The settings after "e.g." in the description of the command's overrides argument.</summary>
    static string[] Examples(Command command)
    {
        string description = command.Arguments.Single(a => a.Name == "overrides").Description!;
        return [.. Setting().Matches(description[(description.IndexOf("e.g.", StringComparison.Ordinal) + 4)..]).Select(m => m.Value)];
    }

    [GeneratedRegex(@"\b[a-z_]+\.[a-z_]+=[0-9a-z_.+-]*[0-9a-z_]")]
    private static partial Regex Setting();
}
