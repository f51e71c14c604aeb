// The saved model: safetensors (loadable from Python) with the resolved run configuration in its metadata.
using System.Text;
using System.Text.Json.Nodes;
using Coordinator;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace Rank.Training;

/// <summary>
/// safetensors through TorchSharp.PyBridge: Python users open it with `safetensors.safe_open(path, "pt")`, and
/// `.metadata()["config"]` holds the resolved configuration as JSON. PyBridge writes no metadata, so the header's
/// `__metadata__` entry is added here: tensor offsets are relative to the end of the header, so they stay valid.
/// </summary>
public static class Checkpoint
{
    public static void Save(nn.Module model, string configJson, string path)
    {
        using var buffer = new MemoryStream();
        model.save_safetensors(buffer, leaveOpen: true);
        byte[] file = buffer.ToArray();
        long headerLength = BitConverter.ToInt64(file, 0);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(file, 8, (int)headerLength))!.AsObject();
        header["__metadata__"] = new JsonObject { ["format"] = "pt", ["config"] = configJson };
        byte[] newHeader = Encoding.UTF8.GetBytes(header.ToJsonString());

        AtomicFile.Write(path, output => // never a half-written checkpoint under the final name
        {
            output.Write(BitConverter.GetBytes((long)newHeader.Length));
            output.Write(newHeader);
            output.Write(file, 8 + (int)headerLength, file.Length - 8 - (int)headerLength);
        });
    }

    /// <summary>The configuration JSON stored in a checkpoint's metadata.</summary>
    public static string ReadConfig(string path)
    {
        using var stream = File.OpenRead(path);
        var lengthBytes = new byte[8];
        stream.ReadExactly(lengthBytes);
        var header = new byte[BitConverter.ToInt64(lengthBytes)];
        stream.ReadExactly(header);
        var metadata = JsonNode.Parse(header)!["__metadata__"]
            ?? throw new InvalidDataException($"{path}: no __metadata__ in the safetensors header");
        return metadata["config"]?.GetValue<string>() ?? throw new InvalidDataException($"{path}: no config in the metadata");
    }

    public static void Load(nn.Module model, string path) => model.load_safetensors(path);
}
