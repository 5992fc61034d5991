using System.Diagnostics;

namespace Herald.Kafka.Tests;

/// <summary>
/// Runs interop/kafkajs-client.js with kafkajs 2.2, installed once per machine into a temp folder with npm. Returns
/// null with the reason when node or the package cannot be had here, so the interop tests say why they did not run.
/// </summary>
internal static class NodeKafkajs
{
    private static readonly SemaphoreSlim InstallGate = new(1, 1);
    private static readonly string InstallDir = Path.Combine(Path.GetTempPath(), "herald-tests-kafkajs-2.2");
    private static string? _unavailable;

    /// <summary>Why kafkajs cannot run on this machine, or null when it can (installing it on first use).</summary>
    public static async Task<string?> UnavailableAsync()
    {
        await InstallGate.WaitAsync();
        try
        {
            if (_unavailable is not null || File.Exists(Path.Combine(InstallDir, "node_modules", "kafkajs", "package.json")))
            {
                return _unavailable;
            }

            Directory.CreateDirectory(InstallDir);
            try
            {
                var (code, _, error) = await RunProcessAsync("npm", ["install", "--prefix", InstallDir, "--no-audit", "--no-fund", "--silent", "kafkajs@2.2"], TimeSpan.FromMinutes(2));
                if (code != 0)
                {
                    _unavailable = $"npm install kafkajs@2.2 failed ({code}): {error}";
                }
            }
            catch (System.ComponentModel.Win32Exception e)
            {
                _unavailable = "npm is not installed: " + e.Message;
            }

            return _unavailable;
        }
        finally
        {
            InstallGate.Release();
        }
    }

    public static async Task<string> RunAsync(params string[] arguments)
    {
        var script = Path.Combine(AppContext.BaseDirectory, "interop", "kafkajs-client.js");
        var (code, output, error) = await RunProcessAsync("node", [script, .. arguments], TimeSpan.FromSeconds(40), ("NODE_PATH", Path.Combine(InstallDir, "node_modules")));
        Assert.True(code == 0, $"node {string.Join(' ', arguments)} exited {code}: {error}");
        return output;
    }

    private static async Task<(int Code, string Output, string Error)> RunProcessAsync(string file, string[] arguments, TimeSpan timeout, params (string Name, string Value)[] environment)
    {
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
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', arguments)} did not finish within {timeout}.");
        }

        return (process.ExitCode, await output, await error);
    }
}
