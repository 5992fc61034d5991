using Herald.Processes;
using Xunit.Abstractions;

namespace Herald.Nats.Tests;

/// <summary>
/// Runs interop/nats-client.js with the <c>nats</c> npm client 2.29, installed once per machine into a temp folder with
/// npm, as the RabbitMQ interop tests do with amqplib. Where npm cannot install it (no registry, no node), the tests
/// say so in their output and check nothing.
/// </summary>
internal static class NodeNats
{
    private static readonly SemaphoreSlim InstallGate = new(1, 1);
    private static readonly string InstallDir = Path.Combine(Path.GetTempPath(), "herald-tests-nats-2.29");
    private static string? _unavailable;
    private static bool _checked;

    /// <summary>Null when node and the client are ready; else why not (the test prints it and returns).</summary>
    public static async Task<string?> UnavailableAsync()
    {
        await InstallGate.WaitAsync();
        try
        {
            if (_checked)
            {
                return _unavailable;
            }

            _checked = true;
            if (File.Exists(Path.Combine(InstallDir, "node_modules", "nats", "package.json")))
            {
                return null;
            }

            try
            {
                Directory.CreateDirectory(InstallDir);
                var (code, _, error) = await ExternalProcess.RunAsync("npm", ["install", "--prefix", InstallDir, "--no-audit", "--no-fund", "--silent", "nats@2.29"], TimeSpan.FromMinutes(2));
                _unavailable = code == 0 ? null : $"npm install nats@2.29 failed ({code}): {error}";
            }
            catch (Exception e) when (e is System.ComponentModel.Win32Exception or TimeoutException)
            {
                _unavailable = $"npm could not run: {e.Message}";
            }

            return _unavailable;
        }
        finally
        {
            InstallGate.Release();
        }
    }

    /// <summary>Whether the test can run; when not, writes why to its output.</summary>
    public static async Task<bool> ReadyAsync(ITestOutputHelper output)
    {
        if (await UnavailableAsync() is { } why)
        {
            output.WriteLine("Skipped, the Node nats client is not available here: " + why);
            return false;
        }

        return true;
    }

    public static async Task<string> RunAsync(params string[] arguments)
    {
        var script = Path.Combine(AppContext.BaseDirectory, "interop", "nats-client.js");
        var (code, output, error) = await ExternalProcess.RunAsync("node", [script, .. arguments], TimeSpan.FromSeconds(30), ("NODE_PATH", Path.Combine(InstallDir, "node_modules")));
        Assert.True(code == 0, $"node {string.Join(' ', arguments)} exited {code}: {error}");
        return output;
    }
}
