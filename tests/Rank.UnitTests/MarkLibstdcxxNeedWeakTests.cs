// The MSBuild task that applies the patch, run directly on copies, and the result of the real build on this host.
using System.Collections;
using Microsoft.Build.Framework;

namespace Rank.UnitTests;

public class MarkLibstdcxxNeedWeakTests
{
    const ushort Weak = 0x2;

    static bool HostDefinesNewVersion => ElfVersionNeed.DefinesVersion(NativeFiles.HostLibstdcxx, NativeFiles.NewVersion);

    static bool IsWeak(string library) =>
        (ElfVersionNeed.NeedFlags(library, NativeFiles.NeededFile, NativeFiles.NewVersion)!.Value & Weak) != 0;

    static (bool Succeeded, List<string> Messages) RunTask(string library, string mode)
    {
        var engine = new RecordingEngine();
        var task = new MarkLibstdcxxNeedWeak { BuildEngine = engine, Libraries = [new Item(library)], Mode = mode };
        return (task.Execute(), engine.Messages);
    }

    [Fact]
    public void The_build_output_library_is_weak_exactly_when_the_host_libstdcxx_lacks_GLIBCXX_3_4_32()
    {
        // On Debian 12 (libstdc++ of GCC 12) the host lacks it, so the output copy must be weak.
        Assert.Equal(!HostDefinesNewVersion, IsWeak(NativeFiles.OutputLibrary));
    }

    [Fact]
    public void The_build_left_the_NuGet_cache_original_not_weak()
    {
        Assert.False(IsWeak(NativeFiles.NuGetLibrary));
    }

    [Fact]
    public void Mode_always_patches_the_library()
    {
        using var temp = new TempDirectory();
        string copy = temp.File("libLibTorchSharp.so");
        File.Copy(NativeFiles.NuGetLibrary, copy);

        var (succeeded, messages) = RunTask(copy, "always");

        Assert.True(succeeded);
        Assert.True(IsWeak(copy));
        Assert.Contains(messages, m => m.Contains(copy) && m.Contains(nameof(ElfPatchResult.Patched)));
    }

    [Fact]
    public void Mode_auto_patches_exactly_when_the_host_lacks_the_version()
    {
        using var temp = new TempDirectory();
        string copy = temp.File("libLibTorchSharp.so");
        File.Copy(NativeFiles.NuGetLibrary, copy);

        var (succeeded, _) = RunTask(copy, "auto");

        Assert.True(succeeded);
        Assert.Equal(!HostDefinesNewVersion, IsWeak(copy));
    }

    [Fact]
    public void Mode_never_leaves_the_library_untouched()
    {
        using var temp = new TempDirectory();
        string copy = temp.File("libLibTorchSharp.so");
        File.Copy(NativeFiles.NuGetLibrary, copy);
        byte[] before = File.ReadAllBytes(copy);

        var (succeeded, _) = RunTask(copy, "never");

        Assert.True(succeeded);
        Assert.Equal(before, File.ReadAllBytes(copy));
    }

    [Fact]
    public void An_unknown_mode_fails_naming_the_mode_and_leaves_the_library_untouched()
    {
        using var temp = new TempDirectory();
        string copy = temp.File("libLibTorchSharp.so");
        File.Copy(NativeFiles.NuGetLibrary, copy);
        byte[] before = File.ReadAllBytes(copy);

        var (succeeded, messages) = RunTask(copy, "sometimes");

        Assert.False(succeeded);
        Assert.Contains(messages, m => m.StartsWith("error:", StringComparison.Ordinal) && m.Contains("'sometimes'"));
        Assert.Equal(before, File.ReadAllBytes(copy));
    }

    sealed class Item(string spec) : ITaskItem
    {
        public string ItemSpec { get; set; } = spec;
        public ICollection MetadataNames => Array.Empty<string>();
        public int MetadataCount => 0;
        public string GetMetadata(string metadataName) => "";
        public void SetMetadata(string metadataName, string metadataValue) { }
        public void RemoveMetadata(string metadataName) { }
        public void CopyMetadataTo(ITaskItem destinationItem) { }
        public IDictionary CloneCustomMetadata() => new Hashtable();
    }

    sealed class RecordingEngine : IBuildEngine
    {
        public List<string> Messages { get; } = new();
        public bool ContinueOnError => false;
        public int LineNumberOfTaskNode => 0;
        public int ColumnNumberOfTaskNode => 0;
        public string ProjectFileOfTaskNode => "test.proj";
        public bool BuildProjectFile(string projectFileName, string[] targetNames, IDictionary globalProperties, IDictionary targetOutputs) => false;
#pragma warning disable CS0618 // CustomBuildEventArgs is obsolete, but the interface still declares it
        public void LogCustomEvent(CustomBuildEventArgs e) => Messages.Add(e.Message ?? "");
#pragma warning restore CS0618
        public void LogErrorEvent(BuildErrorEventArgs e) => Messages.Add("error: " + e.Message);
        public void LogMessageEvent(BuildMessageEventArgs e) => Messages.Add(e.Message ?? "");
        public void LogWarningEvent(BuildWarningEventArgs e) => Messages.Add("warning: " + e.Message);
    }
}
