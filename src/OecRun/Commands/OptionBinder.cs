// Binds a command's options to its typed options record in one place: each option is declared with the `with` that
// sets its value, and Bind folds a parse result into the record.
using System.CommandLine;

namespace OecRun.Commands;

/// <summary>Adds options and arguments to <paramref name="command"/>, in order, each with how its value goes into a
/// <typeparamref name="T"/>; <see cref="Bind"/> applies them all to <paramref name="defaults"/>.</summary>
public sealed class OptionBinder<T>(Command command, T defaults)
{
    readonly List<Func<ParseResult, T, T>> setters = [];

    /// <summary>The record before any option is applied: where options take their default values from.</summary>
    public T Defaults => defaults;

    public Option<V> Add<V>(Option<V> option, Func<T, V, T> set)
    {
        command.Options.Add(option);
        setters.Add((parse, options) => set(options, parse.GetValue(option)!));
        return option;
    }

    public Argument<V> Add<V>(Argument<V> argument, Func<T, V, T> set)
    {
        command.Arguments.Add(argument);
        setters.Add((parse, options) => set(options, parse.GetValue(argument)!));
        return argument;
    }

    /// <summary>The defaults with every option's parsed value applied; throws what a setter throws (a bad value).</summary>
    public T Bind(ParseResult parse) => setters.Aggregate(defaults, (options, set) => set(parse, options));
}
