// The saved model: safetensors (loadable from Python) with the resolved run configuration in its metadata.
using System.Text;
using System.Text.Json.Nodes;
using Job;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Rank.Training;

/// <summary>
/// safetensors: Python users open it with `safetensors.safe_open(path, "pt")`, and `.metadata()["config"]` holds
/// the resolved configuration as JSON. Written here (header, then each tensor's bytes from a CPU copy) because
/// TorchSharp.PyBridge's writer reads tensor bytes through a CPU pointer, which a GPU model does not have and
/// which has no place for metadata; read back with PyBridge, which copies into the model's tensors wherever they are.
/// </summary>
public static class Checkpoint
{
    public static void Save(nn.Module model, string configJson, string path) =>
        Write(path, model.state_dict().Select(kv => (kv.Key, kv.Value)).ToList(), new Dictionary<string, string> { ["config"] = configJson });

    /// <summary>Named tensors (any device; written from CPU copies, in the given order) and string metadata as one
    /// safetensors file, whole or not at all.</summary>
    public static void Write(string path, IReadOnlyList<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        var meta = new JsonObject { ["format"] = "pt" };
        foreach (var (key, value) in metadata) meta[key] = value;
        var header = new JsonObject { ["__metadata__"] = meta };
        long offset = 0;
        foreach (var (name, t) in tensors)
        {
            long bytes = t.numel() * t.ElementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = SafetensorsType(t.dtype),
                ["shape"] = new JsonArray(t.shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        byte[] padded = new byte[(json.Length + 7) / 8 * 8]; // the format allows trailing spaces; 8-byte aligned data
        Array.Fill(padded, (byte)' ');
        json.CopyTo(padded, 0);

        AtomicFile.Write(path, output => // never a half-written checkpoint under the final name
        {
            output.Write(BitConverter.GetBytes((long)padded.Length));
            output.Write(padded);
            foreach (var (_, t) in tensors)
            {
                using var scope = NewDisposeScope();                       // the detached view and the host copy too
                output.Write(t.detach().cpu().contiguous().bytes);
            }
        });
    }

    static string SafetensorsType(ScalarType type) => type switch
    {
        ScalarType.Float32 => "F32",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Float16 => "F16",
        ScalarType.Float64 => "F64",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        _ => throw new ArgumentException($"safetensors: no type for a {type} tensor"),
    };

    /// <summary>The configuration JSON stored in a checkpoint's metadata.</summary>
    public static string ReadConfig(string path) => ReadMetadata(path, "config");

    /// <summary>One string of a safetensors file's metadata; throws naming the file and the key when it is absent.</summary>
    public static string ReadMetadata(string path, string key)
    {
        using var stream = File.OpenRead(path);
        var lengthBytes = new byte[8];
        stream.ReadExactly(lengthBytes);
        var header = new byte[BitConverter.ToInt64(lengthBytes)];
        stream.ReadExactly(header);
        var metadata = JsonNode.Parse(header)!["__metadata__"]
            ?? throw new InvalidDataException($"{path}: no __metadata__ in the safetensors header");
        return metadata[key]?.GetValue<string>() ?? throw new InvalidDataException($"{path}: no {key} in the metadata");
    }

    public static void Load(nn.Module model, string path) => model.load_safetensors(path);
}
