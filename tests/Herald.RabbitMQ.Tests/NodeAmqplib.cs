using System.Diagnostics;

namespace Herald.RabbitMQ.Tests;

/// <summary>Runs interop/amqplib-client.js with amqplib 0.10, installed once per machine into a temp folder with npm.</summary>
internal static class NodeAmqplib
{
    private static readonly SemaphoreSlim InstallGate = new(1, 1);
    private static readonly string InstallDir = Path.Combine(Path.GetTempPath(), "herald-tests-amqplib-0.10");

    public static async Task<string> RunAsync(params string[] arguments)
    {
        await EnsureInstalledAsync();
        var script = Path.Combine(AppContext.BaseDirectory, "interop", "amqplib-client.js");
        var (code, output, error) = await RunProcessAsync("node", [script, .. arguments], TimeSpan.FromSeconds(30), ("NODE_PATH", Path.Combine(InstallDir, "node_modules")));
        Assert.True(code == 0, $"node {string.Join(' ', arguments)} exited {code}: {error}");
        return output;
    }

    private static async Task EnsureInstalledAsync()
    {
        await InstallGate.WaitAsync();
        try
        {
            if (File.Exists(Path.Combine(InstallDir, "node_modules", "amqplib", "package.json")))
            {
                return;
            }

            Directory.CreateDirectory(InstallDir);
            var (code, _, error) = await RunProcessAsync("npm", ["install", "--prefix", InstallDir, "--no-audit", "--no-fund", "--silent", "amqplib@0.10"], TimeSpan.FromMinutes(2));
            Assert.True(code == 0, $"npm install amqplib@0.10 failed ({code}): {error}");
        }
        finally
        {
            InstallGate.Release();
        }
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
