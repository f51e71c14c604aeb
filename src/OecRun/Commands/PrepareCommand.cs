// `oecrun prepare`: tokenise text files into llm.c-format train and validation shards.
using System.CommandLine;
using Data;

namespace OecRun.Commands;

public static class PrepareCommand
{
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
            Prepare.Run(b.Bind(parse), Console.Out);
            return 0;
        });
        return command;
    }
}
