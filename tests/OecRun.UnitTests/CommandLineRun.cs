// Runs oecrun's command line in this process, as the program's Main does, with Console.Out and Console.Error captured.
namespace OecRun.UnitTests;

internal static class CommandLineRun
{
    /// <summary>Runs the command line with Console.Out and Console.Error captured.</summary>
    public static (int ExitCode, string Out, string Error) Invoke(params string[] args)
    {
        var (oldOut, oldError) = (Console.Out, Console.Error);
        var (output, error) = (new StringWriter(), new StringWriter());
        Console.SetOut(output);
        Console.SetError(error);
        try
        {
            int code = Program.Run(args);
            return (code, output.ToString(), error.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldError);
        }
    }
}
