// Turns UTF-8 text files into GPT-2 BPE token shards (train and validation split) in the llm.c format.
using System.Diagnostics;
using System.Globalization;
using System.IO.Enumeration;
using Microsoft.ML.Tokenizers;

namespace Data;

/// <summary>
/// Text to shards, as llm.c does it: every document is preceded by the end-of-text token 50256 and the token stream of
/// each split is cut into shards of at most ShardTokens tokens (a document may continue into the next shard).
/// Document i (counted over all inputs in order) goes to validation when floor((i+1)f) &gt; floor(i f).
/// </summary>
public static class Prepare
{
    /// <summary>GPT-2's &lt;|endoftext|&gt; token id.</summary>
    public const int EndOfText = 50256;

    private const string EndOfTextLiteral = "<|endoftext|>";

    /// <summary>Characters of documents tokenised in parallel before their tokens are routed, in order, to the shards.</summary>
    private const long BatchChars = 1 << 20;

    /// <summary>
    /// Tokenises options.Inputs into OutputDirectory. Refuses to run when shards named {Name}_train_*.bin or
    /// {Name}_val_*.bin already exist there; on any failure, and when <paramref name="cancel"/> is cancelled (the
    /// command's SIGINT or SIGTERM), deletes the shards this run wrote, and the output directory if this run created it,
    /// so nothing partial remains (a partial set would train without a word).
    /// </summary>
    public static PrepareSummary Run(PrepareOptions options, TextWriter log, CancellationToken cancel = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(log);
        Validate(options);
        string? created = FirstMissing(Path.GetFullPath(options.OutputDirectory));
        Directory.CreateDirectory(options.OutputDirectory);
        RefuseExistingShards(options);
        var clock = Stopwatch.StartNew();
        var train = new ShardSink(options.OutputDirectory, options.Name, "train", (int)options.ShardTokens);
        var val = new ShardSink(options.OutputDirectory, options.Name, "val", (int)options.ShardTokens);
        try
        {
            long documents = Tokenise(options, train, val, log, cancel);
            train.Flush();
            val.Flush();
            var summary = new PrepareSummary(documents, train.Tokens, val.Tokens, [.. train.Written], [.. val.Written]);
            LogSummary(log, options, summary, clock.Elapsed);
            return summary;
        }
        catch
        {
            train.DeleteWritten();
            val.DeleteWritten();
            if (created is not null) Directory.Delete(created, recursive: true);
            throw;
        }
    }

    // The outermost directory of `path` that does not exist yet (null when `path` exists): what CreateDirectory adds.
    private static string? FirstMissing(string path)
    {
        string? missing = null;
        for (string? dir = path; dir is not null && !Directory.Exists(dir); dir = Path.GetDirectoryName(dir)) missing = dir;
        return missing;
    }

    /// <summary>True when document `index` belongs to the validation split for fraction f.</summary>
    public static bool IsValidation(long index, double valFraction) =>
        Math.Floor((index + 1) * valFraction) > Math.Floor(index * valFraction);

    private static void Validate(PrepareOptions options)
    {
        if (options.Inputs is null || options.Inputs.Count == 0)
        {
            throw new ArgumentException("inputs: none given; give at least one text file");
        }

        if (string.IsNullOrWhiteSpace(options.OutputDirectory))
        {
            throw new ArgumentException($"--output '{options.OutputDirectory}': empty; give a directory path");
        }

        if (string.IsNullOrEmpty(options.Name) || options.Name.IndexOfAny([.. Path.GetInvalidFileNameChars(), '*', '?', '/', '\\']) >= 0)
        {
            throw new ArgumentException($"--name '{options.Name}': must be a plain file-name prefix (no path separators or wildcards)");
        }

        if (!(options.ValFraction >= 0 && options.ValFraction < 1))
        {
            throw new ArgumentOutOfRangeException(null, $"--val-fraction {options.ValFraction}: must be in [0, 1)");
        }

        if (options.ShardTokens < 1 || options.ShardTokens > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(null, $"--shard-tokens {options.ShardTokens}: must be in [1, {Array.MaxLength}]");
        }

        foreach (string input in options.Inputs)
        {
            if (!File.Exists(input))
            {
                throw new FileNotFoundException($"{input}: input file not found", input);
            }
        }
    }

    /// <summary>Stale shards of the same name would be picked up by a {Name}_train_*.bin pattern next to the new ones.</summary>
    private static void RefuseExistingShards(PrepareOptions options)
    {
        string[] patterns = [$"{options.Name}_train_*.bin", $"{options.Name}_val_*.bin"];
        string? existing = Directory.EnumerateFiles(options.OutputDirectory)
            .Where(p => patterns.Any(pattern => FileSystemName.MatchesSimpleExpression(pattern, Path.GetFileName(p), ignoreCase: false)))
            .Order(StringComparer.Ordinal)
            .FirstOrDefault();
        if (existing is not null)
        {
            throw new IOException(
                $"{existing}: shard from an earlier run is in the way; delete the old {patterns[0]} and {patterns[1]} shards or choose another --name");
        }
    }

    /// <summary>Streams every input through the tokenizer into the sinks; returns the number of documents.</summary>
    private static long Tokenise(PrepareOptions options, ShardSink train, ShardSink val, TextWriter log, CancellationToken cancel)
    {
        var tokenizer = TiktokenTokenizer.CreateForModel("gpt2");
        var progress = new ProgressBar(log, options.Inputs.Sum(p => new FileInfo(p).Length));
        long documents = 0;
        long bytesBefore = 0;
        foreach (string input in options.Inputs)
        {
            using var reader = new DocumentReader(input);
            long first = documents;
            var batch = new List<string>();
            long batchChars = 0;
            foreach (string document in reader.Documents())
            {
                cancel.ThrowIfCancellationRequested();
                batch.Add(document);
                batchChars += document.Length;
                if (batchChars >= BatchChars)
                {
                    documents = Route(tokenizer, batch, documents, options.ValFraction, train, val);
                    batch.Clear();
                    batchChars = 0;
                    progress.Report(bytesBefore + reader.BytesRead);
                }
            }

            cancel.ThrowIfCancellationRequested();
            documents = Route(tokenizer, batch, documents, options.ValFraction, train, val);
            if (documents == first)
            {
                throw new DataFormatException($"{input}: no documents (the file is empty or holds only blank lines)");
            }

            bytesBefore += reader.Length;
            progress.Report(bytesBefore);
        }

        progress.Finish(bytesBefore);
        return documents;
    }

    /// <summary>Tokenises the batch in parallel, then appends [EndOfText, document...] to each document's split in order.</summary>
    private static long Route(Tokenizer tokenizer, List<string> batch, long firstIndex, double valFraction, ShardSink train, ShardSink val)
    {
        var encoded = new int[batch.Count][];
        Parallel.For(0, batch.Count, i => encoded[i] = EncodeOrdinary(tokenizer, batch[i]));
        for (int i = 0; i < batch.Count; i++)
        {
            ShardSink sink = IsValidation(firstIndex + i, valFraction) ? val : train;
            sink.Append([EndOfText]);
            sink.Append(encoded[i]);
        }

        return firstIndex + batch.Count;
    }

    /// <summary>
    /// The tokenizer maps a literal "&lt;|endoftext|&gt;" in text to token 50256, which would fake a document boundary;
    /// like tiktoken's encode_ordinary, such text is encoded as ordinary characters ("&lt;|endoftext" then "|&gt;").
    /// </summary>
    private static int[] EncodeOrdinary(Tokenizer tokenizer, string text)
    {
        if (!text.Contains(EndOfTextLiteral, StringComparison.Ordinal))
        {
            return [.. tokenizer.EncodeToIds(text)];
        }

        var ids = new List<int>();
        string[] parts = text.Split(EndOfTextLiteral);
        for (int i = 0; i < parts.Length; i++)
        {
            if (i > 0)
            {
                ids.AddRange(tokenizer.EncodeToIds(EndOfTextLiteral[..^2]));
                ids.AddRange(tokenizer.EncodeToIds(EndOfTextLiteral[^2..]));
            }

            ids.AddRange(tokenizer.EncodeToIds(parts[i]));
        }

        return [.. ids];
    }

    private static void LogSummary(TextWriter log, PrepareOptions options, PrepareSummary summary, TimeSpan elapsed)
    {
        var c = CultureInfo.InvariantCulture;
        log.WriteLine(string.Create(
            c,
            $"prepare: {summary.Documents:N0} documents -> {summary.TrainTokens:N0} train tokens in {summary.TrainShards.Count} shards, {summary.ValTokens:N0} val tokens in {summary.ValShards.Count} shards, {elapsed.TotalSeconds:F1} s"));
        log.WriteLine($"prepare: shards in {options.OutputDirectory}: {options.Name}_train_*.bin, {options.Name}_val_*.bin");
        if (options.ValFraction > 0 && summary.ValShards.Count == 0)
        {
            log.WriteLine(string.Create(c, $"prepare: warning: --val-fraction {options.ValFraction} put none of the {summary.Documents} documents into validation"));
        }
    }
}
