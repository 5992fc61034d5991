using System.Diagnostics;

namespace Herald.Processes.Servers;

/// <summary>
/// A private redis-server on a free port of 127.0.0.1, for tests that kill and restart it. Persistence is on (append-only
/// file, fsync on every write): a mark or key Redis acknowledged survives the restart, as it must for the inbox's marks
/// to keep their promise. Without persistence a restart empties Redis, and with it every inbox mark (by design).
/// </summary>
public sealed class RedisServer : IAsyncDisposable
{
    private readonly string _program;
    private readonly string _folder;
    private Process? _process;

    private RedisServer(string program, string folder, int port)
    {
        _program = program;
        _folder = folder;
        Port = port;
    }

    /// <summary>The server's port on 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>A StackExchange.Redis configuration string for this server.</summary>
    public string Configuration => $"127.0.0.1:{Port}";

    /// <summary>Starts a server in a new temporary folder and waits until it answers.</summary>
    public static async Task<RedisServer> StartAsync()
    {
        var program = LocalServer.FindProgram("redis-server", "redis-server", "/usr/bin", "/usr/local/bin", "/opt/homebrew/bin");
        var server = new RedisServer(program, await LocalServer.CreateFolderAsync("herald-redis"), LocalServer.FreePort());
        try
        {
            await server.StartProcessAsync().ConfigureAwait(false);
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return server;
    }

    /// <summary>Kills the server (SIGKILL: no chance to save anything but what it already wrote) and starts it again on the same port and data.</summary>
    public async Task RestartAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await StartAgainAsync().ConfigureAwait(false);
    }

    /// <summary>Kills the server (SIGKILL); what it acknowledged is in its append-only file already.</summary>
    public Task StopAsync() => KillAsync();

    /// <summary>Starts the killed server again on the same port and data, and waits until it accepts connections.</summary>
    public Task StartAgainAsync() => _process is null ? StartProcessAsync() : Task.CompletedTask;

    /// <summary>Kills the server and deletes its folder.</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        LocalServer.DeleteFolder(_folder);
    }

    private async Task StartProcessAsync()
    {
        var start = new ProcessStartInfo(_program)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = _folder,
        };
        foreach (var argument in new[]
        {
            "--bind", "127.0.0.1", "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "--dir", _folder, "--logfile", Path.Combine(_folder, "redis.log"), "--daemonize", "no",
            "--appendonly", "yes", "--appendfsync", "always", "--save", string.Empty,
        })
        {
            start.ArgumentList.Add(argument);
        }

        var process = Process.Start(start)!;
        process.StandardInput.Close();
        process.OutputDataReceived += static (_, _) => { };
        process.ErrorDataReceived += static (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        _process = process;
        await LocalServer.WaitUntilAsync(
            async () => process.HasExited
                ? throw new InvalidOperationException($"redis-server exited with {process.ExitCode}: {ReadLog()}")
                : await LocalServer.AcceptsAsync(Port).ConfigureAwait(false),
            $"redis-server on 127.0.0.1:{Port}",
            TimeSpan.FromSeconds(20)).ConfigureAwait(false);
    }

    private async Task KillAsync()
    {
        if (_process is not { } process)
        {
            return;
        }

        _process = null;
        if (!process.HasExited)
        {
            process.Kill();
        }

        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(20)).ConfigureAwait(false);
        process.Dispose();
    }

    private string ReadLog()
    {
        var log = Path.Combine(_folder, "redis.log");
        return File.Exists(log) ? string.Join('\n', File.ReadLines(log).TakeLast(5)) : "(no log)";
    }
}
