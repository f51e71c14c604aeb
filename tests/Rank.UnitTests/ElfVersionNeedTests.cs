// The build's ELF patcher on real copies of TorchSharp's libLibTorchSharp.so. The NuGet cache is only read.
using System.Runtime.InteropServices;
using System.Runtime.Versioning;

namespace Rank.UnitTests;

[SupportedOSPlatform("linux")] // ELF files and Unix file modes
public class ElfVersionNeedTests
{
    const ushort Weak = 0x2; // VER_FLG_WEAK

    /// <summary>A fresh copy of the pristine library in <paramref name="temp"/>.</summary>
    static string PristineCopy(TempDirectory temp)
    {
        string copy = temp.File("libLibTorchSharp.so");
        File.Copy(NativeFiles.NuGetLibrary, copy);
        return copy;
    }

    static int DifferingBytes(byte[] a, byte[] b)
    {
        Assert.Equal(a.Length, b.Length);
        int count = 0;
        for (int i = 0; i < a.Length; i++) if (a[i] != b[i]) count++;
        return count;
    }

    [Fact]
    public void The_pristine_library_needs_GLIBCXX_3_4_32_and_not_weakly()
    {
        ushort? flags = ElfVersionNeed.NeedFlags(NativeFiles.NuGetLibrary, NativeFiles.NeededFile, NativeFiles.NewVersion);

        Assert.NotNull(flags);
        Assert.Equal(0, flags!.Value & Weak);
    }

    [Fact]
    public void MarkWeak_sets_the_weak_flag_by_changing_exactly_one_byte()
    {
        using var temp = new TempDirectory();
        string copy = PristineCopy(temp);
        byte[] before = File.ReadAllBytes(copy);

        var result = ElfVersionNeed.MarkWeak(copy, NativeFiles.NeededFile, NativeFiles.NewVersion);

        Assert.Equal(ElfPatchResult.Patched, result);
        ushort? flags = ElfVersionNeed.NeedFlags(copy, NativeFiles.NeededFile, NativeFiles.NewVersion);
        Assert.NotNull(flags);
        Assert.Equal(Weak, flags!.Value & Weak);
        Assert.Equal(1, DifferingBytes(before, File.ReadAllBytes(copy)));
        Assert.Equal(["libLibTorchSharp.so"], Directory.GetFiles(temp.Path).Select(Path.GetFileName)); // no .patching left
    }

    [Fact]
    public void MarkWeak_leaves_the_other_version_needs_alone()
    {
        using var temp = new TempDirectory();
        string copy = PristineCopy(temp);

        ElfVersionNeed.MarkWeak(copy, NativeFiles.NeededFile, NativeFiles.NewVersion);

        foreach (var version in new[] { "GLIBCXX_3.4.19", "GLIBCXX_3.4.22", "CXXABI_1.3.5" })
        {
            ushort? flags = ElfVersionNeed.NeedFlags(copy, NativeFiles.NeededFile, version);
            Assert.NotNull(flags);
            Assert.Equal(ElfVersionNeed.NeedFlags(NativeFiles.NuGetLibrary, NativeFiles.NeededFile, version), flags);
            Assert.Equal(0, flags!.Value & Weak);
        }
    }

    [Fact]
    public void MarkWeak_a_second_time_reports_AlreadyWeak_and_leaves_the_file_byte_identical()
    {
        using var temp = new TempDirectory();
        string copy = PristineCopy(temp);
        Assert.Equal(ElfPatchResult.Patched, ElfVersionNeed.MarkWeak(copy, NativeFiles.NeededFile, NativeFiles.NewVersion));
        byte[] once = File.ReadAllBytes(copy);
        DateTime written = File.GetLastWriteTimeUtc(copy);

        var result = ElfVersionNeed.MarkWeak(copy, NativeFiles.NeededFile, NativeFiles.NewVersion);

        Assert.Equal(ElfPatchResult.AlreadyWeak, result);
        Assert.Equal(once, File.ReadAllBytes(copy));
        Assert.Equal(written, File.GetLastWriteTimeUtc(copy));
    }

    [Fact]
    public void MarkWeak_keeps_the_mode_bits_and_the_last_write_time()
    {
        using var temp = new TempDirectory();
        string copy = PristineCopy(temp);
        // Distinctive values, so that a fresh file (default mode, current time) could not pass by accident.
        var mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute;
        var written = new DateTime(2021, 3, 4, 5, 6, 7, DateTimeKind.Utc);
        File.SetUnixFileMode(copy, mode);
        File.SetLastWriteTimeUtc(copy, written);

        Assert.Equal(ElfPatchResult.Patched, ElfVersionNeed.MarkWeak(copy, NativeFiles.NeededFile, NativeFiles.NewVersion));

        Assert.Equal(mode, File.GetUnixFileMode(copy));
        Assert.Equal(written, File.GetLastWriteTimeUtc(copy));
    }

    [DllImport("libc", SetLastError = true)]
    static extern int link(string existing, string created);

    [Fact]
    public void MarkWeak_on_a_hard_link_replaces_the_link_and_leaves_the_other_name_unchanged()
    {
        // The NuGet cache may be hard-linked into an output folder: patching the output must not reach the cache.
        using var temp = new TempDirectory();
        string original = PristineCopy(temp);
        string linked = temp.File("linked.so");
        Assert.Equal(0, link(original, linked));
        byte[] before = File.ReadAllBytes(original);

        Assert.Equal(ElfPatchResult.Patched, ElfVersionNeed.MarkWeak(linked, NativeFiles.NeededFile, NativeFiles.NewVersion));

        Assert.Equal(before, File.ReadAllBytes(original));
        Assert.Equal(1, DifferingBytes(before, File.ReadAllBytes(linked)));
    }

    [Fact]
    public void MarkWeak_for_a_version_the_file_does_not_need_returns_NoSuchNeed_and_changes_nothing()
    {
        using var temp = new TempDirectory();
        string copy = PristineCopy(temp);
        byte[] before = File.ReadAllBytes(copy);

        Assert.Equal(ElfPatchResult.NoSuchNeed, ElfVersionNeed.MarkWeak(copy, NativeFiles.NeededFile, "GLIBCXX_9.9.9"));
        Assert.Equal(ElfPatchResult.NoSuchNeed, ElfVersionNeed.MarkWeak(copy, "libnothere.so.1", NativeFiles.NewVersion));

        Assert.Null(ElfVersionNeed.NeedFlags(copy, NativeFiles.NeededFile, "GLIBCXX_9.9.9"));
        Assert.Equal(before, File.ReadAllBytes(copy));
    }

    [Fact]
    public void A_text_file_is_refused_with_a_message_naming_the_path()
    {
        using var temp = new TempDirectory();
        string text = temp.File("notes.txt");
        File.WriteAllText(text, new string('x', 200) + "\nnot an ELF file\n");
        byte[] before = File.ReadAllBytes(text);

        var markWeak = Assert.Throws<InvalidDataException>(() => ElfVersionNeed.MarkWeak(text, NativeFiles.NeededFile, NativeFiles.NewVersion));
        var needFlags = Assert.Throws<InvalidDataException>(() => ElfVersionNeed.NeedFlags(text, NativeFiles.NeededFile, NativeFiles.NewVersion));
        var defines = Assert.Throws<InvalidDataException>(() => ElfVersionNeed.DefinesVersion(text, NativeFiles.NewVersion));

        Assert.Contains(text, markWeak.Message);
        Assert.Contains(text, needFlags.Message);
        Assert.Contains(text, defines.Message);
        Assert.Equal(before, File.ReadAllBytes(text));
    }

    [Fact]
    public void A_truncated_ELF_file_is_refused_with_a_message_naming_the_path()
    {
        using var temp = new TempDirectory();
        string truncated = temp.File("truncated.so");
        File.WriteAllBytes(truncated, File.ReadAllBytes(NativeFiles.NuGetLibrary)[..100]);

        var markWeak = Assert.Throws<InvalidDataException>(() => ElfVersionNeed.MarkWeak(truncated, NativeFiles.NeededFile, NativeFiles.NewVersion));
        var needFlags = Assert.Throws<InvalidDataException>(() => ElfVersionNeed.NeedFlags(truncated, NativeFiles.NeededFile, NativeFiles.NewVersion));

        Assert.Contains(truncated, markWeak.Message);
        Assert.Contains(truncated, needFlags.Message);
        Assert.Equal(100, new FileInfo(truncated).Length);
    }

    [Fact]
    public void DefinesVersion_finds_GLIBCXX_3_4_30_in_the_host_libstdcxx()
    {
        // Debian 12 (GCC 12) and every newer host define it.
        Assert.True(ElfVersionNeed.DefinesVersion(NativeFiles.HostLibstdcxx, "GLIBCXX_3.4.30"));
        Assert.True(ElfVersionNeed.DefinesVersion(NativeFiles.HostLibstdcxx, "GLIBCXX_3.4"));
    }

    [Fact]
    public void DefinesVersion_is_false_for_a_version_no_libstdcxx_has()
    {
        Assert.False(ElfVersionNeed.DefinesVersion(NativeFiles.HostLibstdcxx, "GLIBCXX_9.9.9"));
    }

    [Fact]
    public void DefinesVersion_is_false_for_a_version_the_library_only_needs()
    {
        // libLibTorchSharp.so needs GLIBCXX versions (.gnu.version_r) but defines none (.gnu.version_d).
        Assert.False(ElfVersionNeed.DefinesVersion(NativeFiles.NuGetLibrary, "GLIBCXX_3.4.19"));
    }
}
