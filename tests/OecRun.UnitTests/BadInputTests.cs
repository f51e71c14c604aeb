// oecrun's answers to bad input: unknown commands, ports out of range, output paths that are files or may not be
// written, option names in messages; each exits 2 with one line naming what the user typed.
using System.Diagnostics;
using System.Runtime.Versioning;
using OecRun.Commands;
using static OecRun.UnitTests.CommandLineRun;

namespace OecRun.UnitTests;

[SupportedOSPlatform("linux")] // Unix file modes
public class BadInputTests
{
    [Fact]
    public void An_unknown_command_exits_with_2_naming_it_and_listing_the_commands()
    {
        var (code, _, error) = Invoke("trian", "train.steps=5");

        Assert.Equal(2, code);
        Assert.StartsWith("error: unknown command 'trian'", error);
        Assert.Contains("train, sweep, coordinator, rank", error);
        Assert.DoesNotContain("Required command", error);
    }

    [Theory]
    [InlineData("--port", "99999")]
    [InlineData("--metrics-port", "-1")]
    public void A_port_out_of_range_exits_with_2_naming_the_flag_and_the_range(string flag, string value)
    {
        var (code, _, error) = Invoke("coordinator", flag, value);

        Assert.Equal(2, code);
        Assert.StartsWith($"error: {flag} {value}: not a TCP port; expected 0 (any free port) to 65535", error);
    }

    [Theory]
    [InlineData("", "is a file, expected a directory")]
    [InlineData("run", "lies under")]
    public void An_out_dir_that_is_or_lies_under_a_file_exits_with_2_naming_it(string below, string problem)
    {
        using var temp = new TempDirectory();
        string file = temp.File("taken");
        File.WriteAllText(file, "x");
        string outDir = Path.Combine(file, below);

        var (code, _, error) = Invoke("train", $"run.out_dir={outDir}");

        Assert.Equal(2, code);
        Assert.StartsWith($"error: run.out_dir = '{outDir}': {problem}", error);
        Assert.Equal("x", File.ReadAllText(file));
    }

    [Fact]
    public void Prepare_into_an_output_under_a_file_exits_with_2_naming_the_flag()
    {
        using var temp = new TempDirectory();
        string input = temp.File("corpus.txt");
        File.WriteAllText(input, "hello world");
        string output = Path.Combine(input, "shards");

        var (code, _, error) = Invoke("prepare", input, "--output", output);

        Assert.Equal(2, code);
        Assert.StartsWith($"error: --output = '{output}': lies under '{input}', which is a file", error);
    }

    [Fact]
    public void Prepare_names_a_bad_value_by_the_flag_that_was_typed()
    {
        using var temp = new TempDirectory();
        string input = temp.File("corpus.txt");
        File.WriteAllText(input, "hello world");

        var (code, _, error) = Invoke("prepare", input, "--output", temp.File("out"), "--val-fraction", "1");

        Assert.Equal(2, code);
        Assert.Equal("error: --val-fraction 1: must be in [0, 1)", error.Trim());
    }

    [SkippableFact]
    public void Train_into_an_out_dir_that_may_not_be_written_exits_with_2_naming_the_path_without_a_stack_trace()
    {
        using var temp = new TempDirectory();
        using var locked = new UnwritableDirectory(temp.File("locked"));
        string outDir = Path.Combine(locked.Path, "run");

        var (code, _, error) = Invoke("train", $"run.out_dir={outDir}", "train.steps=2", "train.warmup_steps=1");

        Assert.Equal(2, code);
        Assert.StartsWith("error: ", error);
        Assert.Contains(outDir, error);
        Assert.DoesNotContain("   at ", error);
    }

    [SkippableFact]
    public void Prepare_into_an_output_that_may_not_be_written_exits_with_2_naming_the_path()
    {
        using var temp = new TempDirectory();
        string input = temp.File("corpus.txt");
        File.WriteAllText(input, "hello world");
        using var locked = new UnwritableDirectory(temp.File("locked"));
        string output = Path.Combine(locked.Path, "shards");

        var (code, _, error) = Invoke("prepare", input, "--output", output);

        Assert.Equal(2, code);
        Assert.Contains(output, error);
        Assert.DoesNotContain("   at ", error);
    }

    [SkippableFact]
    public void Report_into_an_out_that_may_not_be_written_exits_with_2_naming_the_path()
    {
        using var temp = new TempDirectory();
        string run = ReportTests.WriteRun(Directory.CreateDirectory(temp.File("a")).FullName, diverging: false);
        using var locked = new UnwritableDirectory(temp.File("locked"));
        string charts = Path.Combine(locked.Path, "charts");

        var (code, _, error) = Invoke("report", run, "--out", charts);

        Assert.Equal(2, code);
        Assert.Contains(charts, error);
        Assert.DoesNotContain("   at ", error);
    }

    [Fact]
    public void The_guard_turns_a_denied_path_into_exit_code_2()
    {
        var (oldError, error) = (Console.Error, new StringWriter());
        Console.SetError(error);
        try
        {
            int code = CommandLine.Guard(() => throw new UnauthorizedAccessException("Access to the path '/data/run' is denied."));

            Assert.Equal(2, code);
            Assert.Equal("error: Access to the path '/data/run' is denied.", error.ToString().Trim());
        }
        finally
        {
            Console.SetError(oldError);
        }
    }

    /// <summary>A directory nobody may create files in: mode 0555, and for root (whom modes do not stop) the immutable
    /// attribute; the test is skipped where neither holds.</summary>
    sealed class UnwritableDirectory : IDisposable
    {
        public UnwritableDirectory(string path)
        {
            Path = path;
            Directory.CreateDirectory(path);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserExecute | UnixFileMode.GroupRead | UnixFileMode.GroupExecute);
            if (Writable()) Chattr("+i");
            Skip.If(Writable(), $"{path}: neither mode 0555 nor chattr +i stops this user from writing here");
        }

        public string Path { get; }

        bool Writable()
        {
            try
            {
                Directory.CreateDirectory(System.IO.Path.Combine(Path, "probe"));
                Directory.Delete(System.IO.Path.Combine(Path, "probe"));
                return true;
            }
            catch (UnauthorizedAccessException)
            {
                return false;
            }
        }

        void Chattr(string change)
        {
            try
            {
                using var process = Process.Start(new ProcessStartInfo("chattr", [change, Path]) { RedirectStandardError = true })!;
                process.WaitForExit();
            }
            catch (System.ComponentModel.Win32Exception)
            {
                // no chattr here: Writable() decides
            }
        }

        public void Dispose()
        {
            Chattr("-i");
            File.SetUnixFileMode(Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        }
    }
}
