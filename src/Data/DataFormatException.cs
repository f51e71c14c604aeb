// The exception for malformed token files and unusable input text.
namespace Data;

/// <summary>A data file or input is malformed; the message starts with the offending path.</summary>
public sealed class DataFormatException(string message) : Exception(message);
