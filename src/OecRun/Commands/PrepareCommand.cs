// `oecrun prepare`: tokenise text files into llm.c-format train and validation shards.
using System.CommandLine;
using Data;

namespace OecRun.Commands;

public static class PrepareCommand
{
    /// <summary>128 + SIGINT, a shell's code for a program interrupted.</summary>
    public const int InterruptedExitCode = 130;

    public static Command Create()
    {
        var command = new Command("prepare", "Tokenise text with the GPT-2 BPE into llm.c-format train and validation shards.");
        var b = new OptionBinder<PrepareOptions>(command, new PrepareOptions([], ""));
        b.Add(new Argument<string[]>("inputs") { Description = "UTF-8 text files; documents are separated by blank lines.", Arity = ArgumentArity.OneOrMore },
            (o, v) => o with { Inputs = v });
        b.Add(new Option<string>("--output") { Description = "Directory for the shards.", Required = true }, (o, v) => o with { OutputDirectory = CommandLine.OutputDirectory(v, "--output") });
        b.Add(new Option<string>("--name") { Description = "Shard name prefix.", DefaultValueFactory = _ => b.Defaults.Name }, (o, v) => o with { Name = v });
        b.Add(new Option<double>("--val-fraction") { Description = "Fraction of documents for validation.", DefaultValueFactory = _ => b.Defaults.ValFraction },
            (o, v) => o with { ValFraction = v });
        b.Add(new Option<long>("--shard-tokens") { Description = "Maximum tokens per shard.", DefaultValueFactory = _ => b.Defaults.ShardTokens },
            (o, v) => o with { ShardTokens = v });
        command.SetGuardedAction(parse =>
        {
            var options = b.Bind(parse);
            using var interrupt = new StopSignals("stopping: deleting the shards written so far (again to end at once, leaving them)");
            try
            {
                Prepare.Run(options, Console.Out, interrupt.Token);
                return 0;
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine($"prepare: interrupted; no {options.Name}_*.bin shard of this run is left in {options.OutputDirectory}");
                return InterruptedExitCode;
            }
        });
        return command;
    }
}
