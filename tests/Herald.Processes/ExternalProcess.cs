using System.Diagnostics;

namespace Herald.Processes;

/// <summary>Runs a program to its end (npm, node with an interop script) and returns its exit code and output.</summary>
public static class ExternalProcess
{
    /// <summary>
    /// Runs <paramref name="file"/> with the arguments and extra environment, stdin closed; kills it (and its children)
    /// and throws <see cref="TimeoutException"/> when it outlives <paramref name="timeout"/>.
    /// </summary>
    public static async Task<(int Code, string Output, string Error)> RunAsync(string file, IEnumerable<string> arguments, TimeSpan timeout, params (string Name, string Value)[] environment)
    {
        ArgumentNullException.ThrowIfNull(arguments);
        ArgumentNullException.ThrowIfNull(environment);
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments)
        {
            start.ArgumentList.Add(argument);
        }

        foreach (var (name, value) in environment)
        {
            start.Environment[name] = value;
        }

        using var process = Process.Start(start)!;
        process.StandardInput.Close();
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', start.ArgumentList)} did not finish within {timeout}.");
        }

        return (process.ExitCode, await output.ConfigureAwait(false), await error.ConfigureAwait(false));
    }
}
