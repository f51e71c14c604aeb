// The command line's binder: options and arguments land in the typed record, defaults where none is given.
using System.CommandLine;
using Oec;
using OecRun.Commands;
using OecRun.Sweep;

namespace OecRun.UnitTests;

public class OptionBinderTests
{
    sealed record Settings(string Name = "default", int Count = 1, IReadOnlyList<string>? Items = null);

    static (Command Command, OptionBinder<Settings> Binder) Build()
    {
        var command = new Command("test");
        var b = new OptionBinder<Settings>(command, new Settings());
        b.Add(new Option<string>("--name") { DefaultValueFactory = _ => b.Defaults.Name }, (o, v) => o with { Name = v });
        b.Add(new Option<int>("--count") { DefaultValueFactory = _ => b.Defaults.Count },
            (o, v) => v >= 0 ? o with { Count = v } : throw new ArgumentException($"--count {v}: negative"));
        b.Add(new Argument<string[]>("items") { Arity = ArgumentArity.ZeroOrMore }, (o, v) => o with { Items = v });
        return (command, b);
    }

    [Fact]
    public void Without_options_the_record_keeps_its_defaults()
    {
        var (command, b) = Build();

        var settings = b.Bind(command.Parse([]));

        Assert.Equal(("default", 1), (settings.Name, settings.Count));
        Assert.Empty(settings.Items!);
    }

    [Fact]
    public void Every_given_option_and_argument_is_set_on_the_record()
    {
        var (command, b) = Build();

        var settings = b.Bind(command.Parse(["--name", "x", "a", "--count", "7", "b"]));

        Assert.Equal(("x", 7), (settings.Name, settings.Count));
        Assert.Equal(["a", "b"], settings.Items!);
        Assert.Equal(["--name", "--count"], command.Options.Select(o => o.Name));
    }

    [Fact]
    public void A_setter_that_refuses_a_value_throws_from_Bind()
    {
        var (command, b) = Build();

        var error = Assert.Throws<ArgumentException>(() => b.Bind(command.Parse(["--count", "-3"])));

        Assert.Contains("--count -3", error.Message);
    }

    [Fact]
    public void The_sweeps_default_methods_are_every_OEC_method_in_order()
    {
        var sweep = Program.Root().Subcommands.Single(c => c.Name == "sweep");
        var methods = (Option<string>)sweep.Options.Single(o => o.Name == "--methods");

        string defaults = sweep.Parse([]).GetValue(methods)!;

        Assert.Equal(Enum.GetValues<OecMethod>(), SweepOptions.ParseMethods(defaults));
        Assert.StartsWith("none,z_loss,soft_cap,mu_loss,mu_centering", defaults);
    }
}
