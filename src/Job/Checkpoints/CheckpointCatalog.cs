// Checkpoints on disk: the manifest that commits one, its verification by checksum, the newest valid one, pruning.
using System.Security.Cryptography;
using System.Text.Json;

namespace Job;

/// <summary>The checkpoints of one run, under `{run.out_dir}/checkpoints/step_{step:D8}/`.</summary>
public sealed class CheckpointCatalog(string root, Action<string> log)
{
    public const string ManifestName = "manifest.json";

    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public string Root { get; } = root;

    // Held while directories are deleted or moved (rotation may run on another thread than a rollback's SetAside).
    readonly Lock moving = new();

    public string DirectoryFor(long step) => Path.Combine(Root, $"step_{step:D8}");

    /// <summary>Writes the manifest once every file is on disk with its declared size, then deletes all but the newest
    /// <paramref name="keep"/> committed checkpoints and any uncommitted directory older than this one. The newest
    /// committed checkpoint at or before step <paramref name="pin"/> is kept too: a divergence rollback's target while
    /// the steps after it are still being judged.</summary>
    public void Commit(CheckpointManifest manifest, int keep, long pin = -1)
    {
        WriteManifest(manifest);
        DeleteUnfinished(manifest.Step);
        foreach (string dir in Superseded(keep, pin)) Retire(dir);
    }

    /// <summary>Commits a checkpoint: its manifest, once every file is on disk with its declared size.</summary>
    public void WriteManifest(CheckpointManifest manifest)
    {
        string dir = DirectoryFor(manifest.Step);
        foreach (var f in manifest.Files)
        {
            var info = new FileInfo(Path.Combine(dir, f.Name));
            if (!info.Exists) throw new InvalidDataException($"checkpoint step {manifest.Step}: {f.Name} is not in {dir}");
            if (info.Length != f.Bytes) throw new InvalidDataException($"checkpoint step {manifest.Step}: {f.Name} has {info.Length} bytes, the rank declared {f.Bytes}");
        }
        Rewrite(manifest);
    }

    /// <summary>Writes the manifest of a checkpoint, whole or not at all (its files are unchanged).</summary>
    public void Rewrite(CheckpointManifest manifest) =>
        AtomicFile.Write(Path.Combine(DirectoryFor(manifest.Step), ManifestName), s => JsonSerializer.Serialize(s, manifest, Json));

    /// <summary>The newest committed checkpoint at or before step <paramref name="atMost"/> whose files all match their
    /// checksums; each one skipped is logged with the reason. Null when there is none.</summary>
    public (CheckpointManifest Manifest, string Directory)? LatestValid(long atMost = long.MaxValue)
    {
        foreach (var (step, dir) in Directories().Where(d => d.Step <= atMost).OrderByDescending(d => d.Step))
        {
            if (!File.Exists(Path.Combine(dir, ManifestName))) continue; // never committed
            try
            {
                return (ReadVerified(dir), dir);
            }
            catch (InvalidDataException e)
            {
                log($"skipping checkpoint {dir}: {e.Message}");
            }
            catch (IOException e) when (!Directory.Exists(dir)) // retired by rotation while read
            {
                log($"skipping checkpoint {dir}: removed while it was read ({e.Message})");
            }
        }
        return null;
    }

    /// <summary>The manifest of a checkpoint directory after checking every file's size and sha256; throws
    /// InvalidDataException naming the file otherwise.</summary>
    public static CheckpointManifest ReadVerified(string dir, Func<CheckpointFile, bool>? which = null)
    {
        string path = Path.Combine(dir, ManifestName);
        var manifest = ReadManifest(path);
        foreach (var f in manifest.Files.Where(which ?? (_ => true)))
        {
            if (f.Name.Contains('/') || f.Name.Contains('\\') || f.Name.StartsWith('.'))
                throw new InvalidDataException($"{path}: file name '{f.Name}' is not a plain file name");
            var file = new FileInfo(Path.Combine(dir, f.Name));
            if (!file.Exists) throw new InvalidDataException($"{f.Name} is missing");
            if (file.Length != f.Bytes) throw new InvalidDataException($"{f.Name} has {file.Length} bytes, the manifest says {f.Bytes}");
            string sha = Sha256(file.FullName);
            if (sha != f.Sha256) throw new InvalidDataException($"{f.Name} has sha256 {sha[..12]}…, the manifest says {f.Sha256[..Math.Min(12, f.Sha256.Length)]}… (corrupt)");
        }
        return manifest;
    }

    static CheckpointManifest ReadManifest(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<CheckpointManifest>(File.ReadAllText(path), Json)
                ?? throw new InvalidDataException($"{path}: empty manifest");
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            throw new InvalidDataException($"{path}: unreadable manifest: {e.Message}");
        }
    }

    /// <summary>The job id in the newest committed checkpoint's manifest that can be read (its files unchecked), or null:
    /// the id a resumed run keeps.</summary>
    public string? NewestJobId()
    {
        foreach (var dir in Committed().Reverse())
        {
            try { return ReadManifest(Path.Combine(dir, ManifestName)).JobId; }
            catch (InvalidDataException) { } // unreadable: the one before may say
        }
        return null;
    }

    public static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>A written file's entry for the manifest.</summary>
    public static CheckpointFile Describe(string path) => new(Path.GetFileName(path), new FileInfo(path).Length, Sha256(path));

    /// <summary>Moves every checkpoint directory after step <paramref name="step"/> (committed or not) into
    /// rolled-back/ beside them, out of reach of LatestValid and rotation but kept for inspection; returns how many.</summary>
    public int SetAside(long step, int generation)
    {
        using var held = moving.EnterScope();
        var later = Directories().Where(d => d.Step > step).ToList();
        foreach (var (s, dir) in later)
        {
            string target = Path.Combine(Root, "rolled-back", $"{Path.GetFileName(dir)}.g{generation}");
            try
            {
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
                Directory.Move(dir, target);
                log($"checkpoint directory {dir} set aside as {target}: it is after step {step}, where the job rolls back to");
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                log($"could not set aside checkpoint directory {dir} (after step {step}, where the job rolls back to): {e.Message}; a later restart may resume from it");
            }
        }
        return later.Count;
    }

    IEnumerable<(long Step, string Dir)> Directories()
    {
        if (!Directory.Exists(Root)) yield break;
        foreach (var dir in Directory.EnumerateDirectories(Root, "step_*"))
            if (long.TryParse(Path.GetFileName(dir)["step_".Length..], out long step)) yield return (step, dir);
    }

    /// <summary>The checkpoint directories that were committed (hold a manifest), valid or not, oldest first.</summary>
    public IEnumerable<string> Committed() =>
        Directories().Where(d => File.Exists(Path.Combine(d.Dir, ManifestName))).OrderBy(d => d.Step).Select(d => d.Dir);

    /// <summary>The committed checkpoints that rotation retires: all but the newest <paramref name="keep"/> and the
    /// newest at or before step <paramref name="pin"/>.</summary>
    public IReadOnlyList<string> Superseded(int keep, long pin = -1)
    {
        var committed = Directories().Where(d => File.Exists(Path.Combine(d.Dir, ManifestName))).OrderByDescending(d => d.Step).ToList();
        long pinned = committed.FirstOrDefault(d => d.Step <= pin, (-1, "")).Step;
        return committed.Skip(keep).Where(d => d.Step != pinned).Select(d => d.Dir).ToList();
    }

    /// <summary>Deletes a superseded checkpoint once it passes its checks (reading every file: the slow part, done
    /// outside any lock); one that fails them is moved into corrupt/ beside them, never deleted: it may be all that is
    /// left of the run. A directory gone meanwhile (set aside by a rollback) is left alone.</summary>
    public void Retire(string dir)
    {
        string? failed = null;
        try { ReadVerified(dir); }
        catch (Exception e) when (e is InvalidDataException or IOException) { failed = e.Message; }
        lock (moving)
        {
            if (!File.Exists(Path.Combine(dir, ManifestName))) return;
            if (failed is null) Delete(dir);
            else MoveToCorrupt(dir, failed);
        }
    }

    /// <summary>Deletes the uncommitted directories older than step <paramref name="newest"/>: a generation's unfinished writes.</summary>
    public void DeleteUnfinished(long newest)
    {
        lock (moving)
            foreach (var (_, dir) in Directories().Where(d => d.Step < newest && !File.Exists(Path.Combine(d.Dir, ManifestName))).ToList())
                Delete(dir);
    }

    void Delete(string dir)
    {
        try { Directory.Delete(dir, recursive: true); }
        catch (IOException e) { log($"could not delete old checkpoint {dir}: {e.Message}"); }
    }

    void MoveToCorrupt(string dir, string failed)
    {
        string target = Path.Combine(Root, "corrupt", Path.GetFileName(dir));
        for (int n = 1; Directory.Exists(target); n++) target = Path.Combine(Root, "corrupt", $"{Path.GetFileName(dir)}.{n}");
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            Directory.Move(dir, target);
            log($"checkpoint {dir} fails its checks ({failed}): moved to {target} instead of being deleted by rotation");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log($"checkpoint {dir} fails its checks ({failed}) and could not be moved aside: {e.Message}; it is kept in place");
        }
    }
}
