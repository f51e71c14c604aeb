// Marks one ELF version need as weak, so that a library built against a newer libstdc++
// loads on Debian 12 / Ubuntu 22.04. Compiled twice: as an MSBuild inline task (RoslynCodeTaskFactory,
// see TorchSharpElfFix.targets) and into the Rank unit tests, which run it on real files.
//
// Why: TorchSharp 0.107's libLibTorchSharp.so declares a need for GLIBCXX_3.4.32 that covers only
// std::ios_base_library_init(), a symbol no relocation references. With VER_FLG_WEAK set on that
// one need entry, the dynamic loader accepts a libstdc++ without the version (docs/architecture.md, "TorchSharp on Debian 12").
// It must compile against netstandard2.0 (what RoslynCodeTaskFactory offers): no spans, no records.
#nullable enable
using System;
using System.Collections.Generic;
using System.IO;
using Microsoft.Build.Framework;

public enum ElfPatchResult { Patched, AlreadyWeak, NoSuchNeed }

public static class ElfVersionNeed
{
    const uint ShtGnuVerdef = 0x6ffffffd;  // section type of .gnu.version_d
    const uint ShtGnuVerneed = 0x6ffffffe; // section type of .gnu.version_r
    const ushort VerFlagWeak = 0x2;        // VER_FLG_WEAK in vna_flags

    /// <summary>Sets VER_FLG_WEAK on the need for <paramref name="version"/> from <paramref name="neededFile"/>.
    /// Writes a temporary file beside the library and renames it over the original, so the file is never half
    /// written and a hard link into the NuGet cache is replaced, not modified.</summary>
    public static ElfPatchResult MarkWeak(string path, string neededFile, string version)
    {
        byte[] elf = File.ReadAllBytes(path);
        int flagsOffset = FindNeedFlagsOffset(elf, path, neededFile, version);
        if (flagsOffset < 0) return ElfPatchResult.NoSuchNeed;
        ushort flags = Read16(elf, flagsOffset, path, "vna_flags");
        if ((flags & VerFlagWeak) != 0) return ElfPatchResult.AlreadyWeak;
        flags |= VerFlagWeak;

        // Copy (keeps the mode bits), patch the two bytes in the copy, rename it over the original.
        // Keep the timestamp: MSBuild's copy-local then sees an unchanged file and does not undo the patch.
        DateTime written = File.GetLastWriteTimeUtc(path);
        string temp = path + ".patching";
        File.Copy(path, temp, overwrite: true);
        using (var stream = new FileStream(temp, FileMode.Open, FileAccess.Write))
        {
            stream.Position = flagsOffset;
            stream.WriteByte((byte)flags);
            stream.WriteByte((byte)(flags >> 8));
        }
        File.SetLastWriteTimeUtc(temp, written);
        File.Replace(temp, path, null);
        return ElfPatchResult.Patched;
    }

    /// <summary>Flags of the need for <paramref name="version"/> from <paramref name="neededFile"/>, or null if absent.</summary>
    public static ushort? NeedFlags(string path, string neededFile, string version)
    {
        byte[] elf = File.ReadAllBytes(path);
        int offset = FindNeedFlagsOffset(elf, path, neededFile, version);
        return offset < 0 ? null : Read16(elf, offset, path, "vna_flags");
    }

    /// <summary>True if the library defines the symbol version (its .gnu.version_d names it).</summary>
    public static bool DefinesVersion(string path, string version)
    {
        byte[] elf = File.ReadAllBytes(path);
        foreach (var (section, strtab) in Sections(elf, path, ShtGnuVerdef))
        {
            int vd = (int)section.Offset;
            for (uint i = 0; i < section.Info; i++)
            {
                // Elf64_Verdef: vd_version u16, vd_flags u16, vd_ndx u16, vd_cnt u16, vd_hash u32, vd_aux u32, vd_next u32
                int aux = vd + (int)Read32(elf, vd + 12, path, "vd_aux");
                if (CString(elf, strtab + Read32(elf, aux, path, "vda_name"), path) == version) return true;
                uint next = Read32(elf, vd + 16, path, "vd_next");
                if (next == 0) break;
                vd += (int)next;
            }
        }
        return false;
    }

    static int FindNeedFlagsOffset(byte[] elf, string path, string neededFile, string version)
    {
        foreach (var (section, strtab) in Sections(elf, path, ShtGnuVerneed))
        {
            int vn = (int)section.Offset;
            for (uint i = 0; i < section.Info; i++)
            {
                // Elf64_Verneed: vn_version u16, vn_cnt u16, vn_file u32, vn_aux u32, vn_next u32
                ushort cnt = Read16(elf, vn + 2, path, "vn_cnt");
                string file = CString(elf, strtab + Read32(elf, vn + 4, path, "vn_file"), path);
                int aux = vn + (int)Read32(elf, vn + 8, path, "vn_aux");
                for (int j = 0; j < cnt; j++)
                {
                    // Elf64_Vernaux: vna_hash u32, vna_flags u16, vna_other u16, vna_name u32, vna_next u32
                    string name = CString(elf, strtab + Read32(elf, aux + 8, path, "vna_name"), path);
                    if (file == neededFile && name == version) return aux + 4;
                    aux += (int)Read32(elf, aux + 12, path, "vna_next");
                }
                uint next = Read32(elf, vn + 12, path, "vn_next");
                if (next == 0) break;
                vn += (int)next;
            }
        }
        return -1;
    }

    sealed class Section
    {
        public uint Type, Link, Info;
        public long Offset;
    }

    /// <summary>Sections of the given type, each with the file offset of its linked string table.</summary>
    static IEnumerable<(Section Section, long StrtabOffset)> Sections(byte[] elf, string path, uint type)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException($"{path}: not an ELF file (no \\x7fELF magic at offset 0)");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException($"{path}: only 64-bit little-endian ELF is supported (class {elf[4]}, data {elf[5]})");
        long shoff = (long)Read64(elf, 0x28, path, "e_shoff");
        int shentsize = Read16(elf, 0x3A, path, "e_shentsize");
        int shnum = Read16(elf, 0x3C, path, "e_shnum");
        if (shoff <= 0 || shentsize < 64 || shoff + (long)shentsize * shnum > elf.Length)
            throw new InvalidDataException($"{path}: truncated or corrupt ELF section header table (offset {shoff}, {shnum} entries)");
        var headers = new Section[shnum];
        for (int i = 0; i < shnum; i++)
        {
            // Elf64_Shdr: sh_name u32, sh_type u32, sh_flags u64, sh_addr u64, sh_offset u64, sh_size u64, sh_link u32, sh_info u32, ...
            long h = shoff + (long)i * shentsize;
            headers[i] = new Section
            {
                Type = Read32(elf, h + 4, path, "sh_type"),
                Offset = (long)Read64(elf, h + 24, path, "sh_offset"),
                Link = Read32(elf, h + 40, path, "sh_link"),
                Info = Read32(elf, h + 44, path, "sh_info"),
            };
        }
        foreach (var s in headers)
        {
            if (s.Type != type) continue;
            if (s.Link >= headers.Length)
                throw new InvalidDataException($"{path}: version section links to string table {s.Link}, beyond {headers.Length} sections");
            yield return (s, headers[s.Link].Offset);
        }
    }

    // Little-endian unsigned reads, bounds-checked so that a corrupt file gives an error naming the field.
    static ulong ReadLe(byte[] elf, long offset, int length, string path, string field)
    {
        if (offset < 0 || offset + length > elf.Length)
            throw new InvalidDataException($"{path}: {field} at offset {offset} lies outside the file ({elf.Length} bytes)");
        ulong value = 0;
        for (int i = length - 1; i >= 0; i--) value = (value << 8) | elf[offset + i];
        return value;
    }

    static ushort Read16(byte[] elf, long offset, string path, string field) => (ushort)ReadLe(elf, offset, 2, path, field);
    static uint Read32(byte[] elf, long offset, string path, string field) => (uint)ReadLe(elf, offset, 4, path, field);
    static ulong Read64(byte[] elf, long offset, string path, string field) => ReadLe(elf, offset, 8, path, field);

    static string CString(byte[] elf, long offset, string path)
    {
        int end = (int)offset;
        while (end < elf.Length && elf[end] != 0) end++;
        if (offset < 0 || end >= elf.Length) throw new InvalidDataException($"{path}: string at offset {offset} lies outside the file");
        return System.Text.Encoding.ASCII.GetString(elf, (int)offset, end - (int)offset);
    }
}

/// <summary>MSBuild task: on a host whose libstdc++ lacks GLIBCXX_3.4.32, mark that need weak in each library.</summary>
public sealed class MarkLibstdcxxNeedWeak : ITask
{
    public IBuildEngine? BuildEngine { get; set; }
    public ITaskHost? HostObject { get; set; }

    [Required] public ITaskItem[] Libraries { get; set; } = Array.Empty<ITaskItem>();
    public string Version { get; set; } = "GLIBCXX_3.4.32";
    /// <summary>auto: patch only if the host's libstdc++ lacks the version; always; never.</summary>
    public string Mode { get; set; } = "auto";

    static readonly string[] LibstdcxxCandidates =
    {
        "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6",
        "/usr/lib64/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
    };

    public bool Execute()
    {
        if (Mode == "never" || Libraries.Length == 0) return true;
        if (Mode != "auto" && Mode != "always")
        {
            BuildEngine?.LogErrorEvent(new BuildErrorEventArgs("", "OEC0001", "", 0, 0, 0, 0,
                $"TorchSharpElfFix = '{Mode}': expected auto, always or never", "", nameof(MarkLibstdcxxNeedWeak)));
            return false;
        }
        string? host = Array.Find(LibstdcxxCandidates, File.Exists);
        if (Mode == "auto" && host != null && ElfVersionNeed.DefinesVersion(host, Version))
        {
            Log(MessageImportance.Low, $"{host} defines {Version}: TorchSharp loads as shipped, nothing patched");
            return true;
        }
        foreach (var item in Libraries)
        {
            var result = ElfVersionNeed.MarkWeak(item.ItemSpec, "libstdc++.so.6", Version);
            Log(MessageImportance.Normal, $"{item.ItemSpec}: {Version} need {result} (host libstdc++: {host ?? "not found"})");
        }
        return true;
    }

    void Log(MessageImportance importance, string message) =>
        BuildEngine?.LogMessageEvent(new BuildMessageEventArgs(message, "", nameof(MarkLibstdcxxNeedWeak), importance));
}
