// The command line: train, prepare, bench. Each command only parses, composes and reports.
using System.CommandLine;
using Rank.Configuration;
using Rank.Training;

namespace Rank;

public static class Cli
{
    public static RootCommand Build()
    {
        var root = new RootCommand("Output-embedding-centering GPT training (one process).");
        root.Subcommands.Add(TrainCommand());
        root.Subcommands.Add(PrepareCommand());
        root.Subcommands.Add(BenchCommand());
        root.Subcommands.Add(BenchCollectivesCommand());
        return root;
    }

    static Command TrainCommand()
    {
        var config = new Option<string?>("--config") { Description = "JSON configuration file (sections model, oec, data, train, run)." };
        var overrides = new Argument<string[]>("overrides")
        {
            Description = "Settings over the file, as section.key=value, e.g. train.learning_rate=1e-3 oec.method=mu_loss.",
            Arity = ArgumentArity.ZeroOrMore,
        };
        var command = new Command("train", "Train on the configured data; without arguments, the embedded default (tiny model, synthetic corpus, mu-centering).")
        {
            config, overrides,
        };
        command.SetAction(parse => Guard(() =>
        {
            var run = RunConfig.Load(parse.GetValue(config), parse.GetValue(overrides) ?? []);
            Console.WriteLine($"resolved configuration:\n{run.ToJson()}");
            TorchRuntime.EnsureLoaded();
            using var trainer = new Trainer(run);
            var result = trainer.Run(Console.Out);
            return result.Diverged ? 3 : 0;
        }));
        return command;
    }

    static Command PrepareCommand()
    {
        var inputs = new Argument<string[]>("inputs") { Description = "UTF-8 text files; documents are separated by blank lines.", Arity = ArgumentArity.OneOrMore };
        var output = new Option<string>("--output") { Description = "Directory for the shards.", Required = true };
        var name = new Option<string>("--name") { Description = "Shard name prefix.", DefaultValueFactory = _ => "data" };
        var valFraction = new Option<double>("--val-fraction") { Description = "Fraction of documents for validation.", DefaultValueFactory = _ => 0.05 };
        var shardTokens = new Option<long>("--shard-tokens") { Description = "Maximum tokens per shard.", DefaultValueFactory = _ => 100_000_000 };
        var command = new Command("prepare", "Tokenise text with the GPT-2 BPE into llm.c-format train and validation shards.")
        {
            inputs, output, name, valFraction, shardTokens,
        };
        command.SetAction(parse => Guard(() =>
        {
            Data.Prepare.Run(new Data.PrepareOptions(parse.GetValue(inputs)!, parse.GetValue(output)!, parse.GetValue(name)!,
                parse.GetValue(valFraction), parse.GetValue(shardTokens)), Console.Out);
            return 0;
        }));
        return command;
    }

    static Command BenchCommand()
    {
        var steps = new Option<int>("--steps") { Description = "Timed steps per measurement (after 3 warmup steps).", DefaultValueFactory = _ => 10 };
        var presets = new Option<string>("--presets") { Description = "Comma-separated model presets.", DefaultValueFactory = _ => "tiny,16M" };
        var command = new Command("bench", "Measure tokens/s of the training step per preset and the step-time overhead of each OEC method.")
        {
            steps, presets,
        };
        command.SetAction(parse => Guard(() =>
        {
            TorchRuntime.EnsureLoaded();
            Bench.Run(parse.GetValue(presets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                parse.GetValue(steps), Console.Out);
            return 0;
        }));
        return command;
    }

    static Command BenchCollectivesCommand()
    {
        var worldSizes = new Option<string>("--world-sizes") { Description = "Comma-separated numbers of ranks.", DefaultValueFactory = _ => "2,4" };
        var maxMegabytes = new Option<int>("--max-mb") { Description = "Largest message in MB; sizes go from 1 KB up by factors of 4.", DefaultValueFactory = _ => 256 };
        var command = new Command("bench-collectives", "Measure the TCP ring all-reduce (algbw, busbw) next to raw TCP loopback throughput.")
        {
            worldSizes, maxMegabytes,
        };
        command.SetAction(parse => Guard(() =>
        {
            TorchRuntime.EnsureLoaded();
            var sizes = new List<long>();
            for (long bytes = 1024; bytes <= (long)parse.GetValue(maxMegabytes) << 20; bytes *= 4) sizes.Add(bytes);
            Collectives.CollectiveBench.Run(parse.GetValue(worldSizes)!.Split(',').Select(int.Parse).ToArray(), sizes, Console.Out);
            return 0;
        }));
        return command;
    }

    /// <summary>Bad settings and bad data end the program with one clear line and exit code 2 (OEC_TRACE=1 adds the stack).</summary>
    static int Guard(Func<int> action)
    {
        try
        {
            return action();
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or Data.DataFormatException or IOException)
        {
            Console.Error.WriteLine(Environment.GetEnvironmentVariable("OEC_TRACE") == "1" ? $"error: {e}" : $"error: {e.Message}");
            return 2;
        }
    }
}
