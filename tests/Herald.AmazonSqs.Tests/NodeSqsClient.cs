using Herald.Processes;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// Runs interop/sqs-client.js with Node's @aws-sdk/client-sqs 3, installed once per machine into a temp folder with npm.
/// When node or the package cannot be had here, <see cref="Unavailable"/> says why and the interop tests say so and return.
/// </summary>
internal static class NodeSqsClient
{
    private static readonly SemaphoreSlim InstallGate = new(1, 1);
    private static readonly string InstallDir = Path.Combine(Path.GetTempPath(), "herald-tests-aws-sdk-client-sqs");
    private static string? _unavailable;
    private static bool _checked;

    /// <summary>Why the Node client cannot run here, or null when it can (installs it on first use).</summary>
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
            if (File.Exists(Path.Combine(InstallDir, "node_modules", "@aws-sdk", "client-sqs", "package.json")))
            {
                return null;
            }

            Directory.CreateDirectory(InstallDir);
            try
            {
                var (code, _, error) = await ExternalProcess.RunAsync("npm", ["install", "--prefix", InstallDir, "--no-audit", "--no-fund", "--silent", "@aws-sdk/client-sqs@3"], TimeSpan.FromMinutes(3));
                _unavailable = code == 0 ? null : $"npm install @aws-sdk/client-sqs@3 failed ({code}): {error}";
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

    public static async Task<string> RunAsync(params string[] arguments)
    {
        var script = Path.Combine(AppContext.BaseDirectory, "interop", "sqs-client.js");
        var (code, output, error) = await ExternalProcess.RunAsync("node", [script, .. arguments], TimeSpan.FromSeconds(30), ("NODE_PATH", Path.Combine(InstallDir, "node_modules")));
        Assert.True(code == 0, $"node {string.Join(' ', arguments)} exited {code}: {error}");
        return output;
    }
}
