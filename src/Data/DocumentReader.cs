// Streams blank-line-separated documents out of one UTF-8 text file, with byte progress.
using System.Text;

namespace Data;

/// <summary>
/// A document is a maximal run of non-blank lines joined with "\n" (no trailing newline); a blank line is empty or
/// whitespace only. Invalid UTF-8 is a DataFormatException naming the file rather than silently replaced text.
/// </summary>
internal sealed class DocumentReader(string path) : IDisposable
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private readonly FileStream stream = new(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);

    /// <summary>Bytes consumed so far (ahead of the documents returned by up to one read buffer).</summary>
    public long BytesRead => stream.Position;

    public long Length => stream.Length;

    public IEnumerable<string> Documents()
    {
        using var reader = new StreamReader(stream, StrictUtf8, detectEncodingFromByteOrderMarks: true, bufferSize: 1 << 16, leaveOpen: true);
        var document = new StringBuilder();
        while (ReadLine(reader) is { } line)
        {
            if (!string.IsNullOrWhiteSpace(line))
            {
                document.Append(document.Length > 0 ? "\n" : string.Empty).Append(line);
            }
            else if (document.Length > 0)
            {
                yield return document.ToString();
                document.Clear();
            }
        }

        if (document.Length > 0)
        {
            yield return document.ToString();
        }
    }

    public void Dispose() => stream.Dispose();

    private string? ReadLine(StreamReader reader)
    {
        try
        {
            return reader.ReadLine();
        }
        catch (DecoderFallbackException)
        {
            throw new DataFormatException($"{path}: invalid UTF-8 within the {1 << 16} bytes before byte offset {stream.Position}");
        }
    }
}
