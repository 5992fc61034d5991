using Herald.Processes;

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
        var (code, output, error) = await ToolProcess.RunAsync("node", [script, .. arguments], TimeSpan.FromSeconds(30), ("NODE_PATH", Path.Combine(InstallDir, "node_modules")));
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
            var (code, _, error) = await ToolProcess.RunAsync("npm", ["install", "--prefix", InstallDir, "--no-audit", "--no-fund", "--silent", "amqplib@0.10"], TimeSpan.FromMinutes(2));
            Assert.True(code == 0, $"npm install amqplib@0.10 failed ({code}): {error}");
        }
        finally
        {
            InstallGate.Release();
        }
    }
}
