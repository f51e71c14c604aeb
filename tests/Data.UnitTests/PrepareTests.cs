// Tests for Prepare: text to GPT-2 shards that decode back to the documents, the split, the log, and clean failure.
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Data.UnitTests;

public sealed class PrepareTests : IDisposable
{
    private static readonly string[] Documents =
    [
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary election produced no evidence.",
        "It is the first paragraph of a two-line document.\nAnd this is its second line, with  two spaces and a tab\there.",
        "Short one.",
        "Café, naïve, 東京, emoji 🙂 and numbers 1961 and 3.14159.",
        "  Leading spaces are kept inside a document.",
        "Fifth document: the grand jury commented on a number of other topics.",
        "Sixth.\nSeventh line belongs to the sixth document.",
        "The last document has no trailing newline at all",
    ];

    private static readonly TiktokenTokenizer Gpt2 = TiktokenTokenizer.CreateForModel("gpt2");

    private readonly TempDirectory temp = new();

    public void Dispose() => temp.Dispose();

    [Fact]
    public void A_small_text_becomes_train_and_val_shards_that_decode_back_to_its_documents()
    {
        string input = WriteText("corpus.txt", "\n\n" + Documents[0] + "\n\n" + string.Join("\n \n\t\n\n", Documents[1..]));
        string output = temp.File("out");
        var log = new StringWriter();

        PrepareSummary summary = Prepare.Run(new PrepareOptions([input], output, "tiny", ValFraction: 0.25, ShardTokens: 16), log);

        string[] train = [.. Documents.Where((_, i) => !Prepare.IsValidation(i, 0.25))];
        string[] val = [Documents[3], Documents[7]];
        Assert.Equal(Documents.Length, summary.Documents);
        Assert.Equal(train, DecodeDocuments(summary.TrainShards));
        Assert.Equal(val, DecodeDocuments(summary.ValShards));
        Assert.Equal(CountTokens(train), summary.TrainTokens);
        Assert.Equal(CountTokens(val), summary.ValTokens);
        Assert.Equal(summary.TrainTokens, TotalTokens(summary.TrainShards));
        Assert.Equal(summary.ValTokens, TotalTokens(summary.ValShards));
        Assert.Equal((summary.TrainTokens + 15) / 16, summary.TrainShards.Count);
        Assert.Equal(Path.Combine(output, "tiny_train_000000.bin"), summary.TrainShards[0]);
        Assert.Equal(Path.Combine(output, "tiny_val_000000.bin"), summary.ValShards[0]);
        Assert.Equal(
            [.. summary.TrainShards, .. summary.ValShards],
            Directory.GetFiles(output).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void The_log_shows_a_progress_bar_and_a_summary()
    {
        string input = WriteText("corpus.txt", string.Join("\n\n", Documents));
        var log = new StringWriter();

        PrepareSummary summary = Prepare.Run(new PrepareOptions([input], temp.File("out"), ValFraction: 0), log);

        string text = log.ToString();
        Assert.Contains("\rprepare [", text);
        Assert.Contains("100.0%", text);
        Assert.Contains("MB/s", text);
        Assert.Contains($"{Documents.Length} documents", text);
        Assert.Contains("1 shards", text);
        Assert.Empty(summary.ValShards);
        Assert.Equal(0, summary.ValTokens);
    }

    [Fact]
    public void Documents_are_numbered_across_inputs_in_order()
    {
        string first = WriteText("a.txt", string.Join("\n\n", Documents[..3]));
        string second = WriteText("b.txt", string.Join("\n\n", Documents[3..]));

        PrepareSummary summary = Prepare.Run(new PrepareOptions([first, second], temp.File("out"), ValFraction: 0.5), TextWriter.Null);

        Assert.Equal(Documents.Length, summary.Documents);
        Assert.Equal(Documents.Where((_, i) => i % 2 == 0), DecodeDocuments(summary.TrainShards));
        Assert.Equal(Documents.Where((_, i) => i % 2 == 1), DecodeDocuments(summary.ValShards));
    }

    [Fact]
    public void A_literal_end_of_text_in_the_text_stays_ordinary_text()
    {
        const string Document = "before <|endoftext|> after";
        string input = WriteText("eot.txt", Document);

        PrepareSummary summary = Prepare.Run(new PrepareOptions([input], temp.File("out"), ValFraction: 0), TextWriter.Null);

        int[] tokens = ReadTokens(summary.TrainShards);
        Assert.Equal(Prepare.EndOfText, tokens[0]);
        Assert.DoesNotContain(Prepare.EndOfText, tokens[1..]);
        Assert.Equal(Document, Gpt2.Decode(tokens[1..]));
    }

    [Fact]
    public void An_empty_file_fails_naming_it_and_leaves_no_shard_nor_the_directory_it_created()
    {
        string input = WriteText("empty.txt", "\n\n  \n");
        string output = temp.File("out");

        var error = Assert.Throws<DataFormatException>(() => Prepare.Run(new PrepareOptions([input], output), TextWriter.Null));

        Assert.StartsWith(input, error.Message);
        Assert.Contains("no documents", error.Message);
        Assert.False(Directory.Exists(output));
    }

    [Fact]
    public void A_failure_midway_deletes_the_shards_the_run_already_wrote()
    {
        string good = WriteText("good.txt", string.Join("\n\n", Documents));
        string bad = temp.File("bad.txt");
        File.WriteAllBytes(bad, [.. Encoding.UTF8.GetBytes("valid start "), 0xC3, 0x28, .. Encoding.UTF8.GetBytes(" rest")]);
        string output = temp.File("out");

        var error = Assert.Throws<DataFormatException>(
            () => Prepare.Run(new PrepareOptions([good, bad], output, ValFraction: 0.2, ShardTokens: 8), TextWriter.Null));

        Assert.StartsWith(bad, error.Message);
        Assert.Contains("invalid UTF-8", error.Message);
        Assert.False(Directory.Exists(output));
    }

    /// <summary>The command's SIGINT or SIGTERM cancels the run: the shards of the first file, already written, go too
    /// (a partial set trains without a word). Cancelled here when the progress bar reports the first file done.</summary>
    [Fact]
    public void An_interrupted_run_deletes_the_shards_it_already_wrote()
    {
        string first = WriteText("first.txt", string.Join("\n\n", Documents));
        string second = WriteText("second.txt", string.Join("\n\n", Documents));
        string output = temp.File("out");
        using var interrupt = new CancellationTokenSource();
        var log = new CancelOnProgress(interrupt, output);

        Assert.Throws<OperationCanceledException>(
            () => Prepare.Run(new PrepareOptions([first, second], output, ValFraction: 0.2, ShardTokens: 8), log, interrupt.Token));

        Assert.True(log.ShardsWhenCancelled > 1, $"{log.ShardsWhenCancelled} shards on disk when cancelled");
        Assert.False(Directory.Exists(output));
    }

    /// <summary>Cancels at the first progress report, counting the shards on disk then.</summary>
    sealed class CancelOnProgress(CancellationTokenSource source, string output) : StringWriter
    {
        public int ShardsWhenCancelled { get; private set; } = -1;

        public override void Write(string? value)
        {
            if (value?.Contains("prepare [") == true && !source.IsCancellationRequested)
            {
                ShardsWhenCancelled = Directory.GetFiles(output, "*.bin").Length;
                source.Cancel();
            }
            base.Write(value);
        }
    }

    [Fact]
    public void A_failure_into_a_directory_that_existed_deletes_only_the_shards_and_keeps_the_directory_and_its_files()
    {
        string output = temp.File("out");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "notes.txt"), "kept");
        string input = WriteText("empty.txt", "\n\n");

        Assert.Throws<DataFormatException>(() => Prepare.Run(new PrepareOptions([input], output), TextWriter.Null));

        Assert.Equal([Path.Combine(output, "notes.txt")], Directory.GetFiles(output));
    }

    [Fact]
    public void A_missing_input_is_named_before_anything_is_written()
    {
        string missing = temp.File("missing.txt");
        string output = temp.File("out");

        var error = Assert.Throws<FileNotFoundException>(() => Prepare.Run(new PrepareOptions([missing], output), TextWriter.Null));

        Assert.Contains(missing, error.Message);
        Assert.False(Directory.Exists(output));
    }

    [Theory]
    [InlineData(1.0, 10L, "--val-fraction 1:")]
    [InlineData(-0.1, 10L, "--val-fraction -0.1:")]
    [InlineData(double.NaN, 10L, "--val-fraction NaN:")]
    [InlineData(0.1, 0L, "--shard-tokens 0:")]
    public void Options_out_of_range_are_named_by_their_flag_with_their_value(double valFraction, long shardTokens, string expected)
    {
        string input = WriteText("corpus.txt", Documents[0]);
        var options = new PrepareOptions([input], temp.File("out"), ValFraction: valFraction, ShardTokens: shardTokens);

        var error = Assert.Throws<ArgumentOutOfRangeException>(() => Prepare.Run(options, TextWriter.Null));

        Assert.StartsWith(expected, error.Message);
        Assert.DoesNotContain("PrepareOptions", error.Message);
    }

    [Fact]
    public void Shards_from_an_earlier_run_are_never_overwritten()
    {
        string input = WriteText("corpus.txt", string.Join("\n\n", Documents));
        string output = temp.File("out");
        PrepareSummary first = Prepare.Run(new PrepareOptions([input], output, ValFraction: 0), TextWriter.Null);
        byte[] before = File.ReadAllBytes(first.TrainShards[0]);

        var error = Assert.Throws<IOException>(() => Prepare.Run(new PrepareOptions([input], output, ValFraction: 0), TextWriter.Null));

        Assert.StartsWith(first.TrainShards[0], error.Message);
        Assert.Equal(before, File.ReadAllBytes(first.TrainShards[0]));
        Prepare.Run(new PrepareOptions([input], output, "other", ValFraction: 0), TextWriter.Null);
    }

    private string WriteText(string name, string text)
    {
        string path = temp.File(name);
        File.WriteAllText(path, text, new UTF8Encoding(false));
        return path;
    }

    private static int[] ReadTokens(IReadOnlyList<string> shards)
    {
        var tokens = new List<int>();
        foreach (string path in shards)
        {
            using var shard = TokenShard.Open(path, 50257, ShardFormat.LlmC);
            var part = new int[shard.TokenCount];
            shard.Read(0, part);
            tokens.AddRange(part);
        }

        return [.. tokens];
    }

    private static long TotalTokens(IReadOnlyList<string> shards) => ReadTokens(shards).Length;

    /// <summary>Splits the concatenated shards at the end-of-text tokens (which must open the stream) and decodes each piece.</summary>
    private static string[] DecodeDocuments(IReadOnlyList<string> shards)
    {
        int[] tokens = ReadTokens(shards);
        if (tokens.Length == 0)
        {
            return [];
        }

        Assert.Equal(Prepare.EndOfText, tokens[0]);
        var documents = new List<string>();
        var current = new List<int>();
        foreach (int token in tokens[1..].Append(Prepare.EndOfText))
        {
            if (token == Prepare.EndOfText)
            {
                documents.Add(Gpt2.Decode(current));
                current.Clear();
            }
            else
            {
                current.Add(token);
            }
        }

        return [.. documents];
    }

    private static long CountTokens(IEnumerable<string> documents) => documents.Sum(d => 1L + Gpt2.EncodeToIds(d).Count);
}
