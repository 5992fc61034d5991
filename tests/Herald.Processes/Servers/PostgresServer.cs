using System.Globalization;

namespace Herald.Processes.Servers;

/// <summary>
/// A private PostgreSQL cluster (initdb, trust authentication on 127.0.0.1) on a free port, for tests that crash and
/// restart it. When running as root its programs run as the postgres user (initdb refuses root).
/// </summary>
public sealed class PostgresServer : IAsyncDisposable
{
    private const string User = "postgres";
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(60);

    private readonly string _bin;
    private readonly string _folder;
    private bool _running;

    private PostgresServer(string bin, string folder, int port)
    {
        _bin = bin;
        _folder = folder;
        Port = port;
    }

    /// <summary>The server's port on 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>An Npgsql connection string for the superuser and its database.</summary>
    public string ConnectionString => $"Host=127.0.0.1;Port={Port};Username=postgres;Database=postgres";

    private string DataFolder => Path.Combine(_folder, "data");

    /// <summary>Creates a cluster in a new temporary folder, starts it and waits until it accepts connections.</summary>
    public static async Task<PostgresServer> StartAsync()
    {
        var bin = Path.GetDirectoryName(LocalServer.FindProgram("initdb", "postgresql-15", await BinFolderAsync().ConfigureAwait(false), "/usr/lib/postgresql/15/bin", "/usr/local/pgsql/bin"))!;
        var server = new PostgresServer(bin, await LocalServer.CreateFolderAsync("herald-postgres", User).ConfigureAwait(false), LocalServer.FreePort());
        try
        {
            await server.ToolAsync("initdb", "-D", server.DataFolder, "-A", "trust", "-U", User, "-E", "UTF8", "--no-sync").ConfigureAwait(false);
            await server.StartServerAsync().ConfigureAwait(false);
        }
        catch
        {
            await server.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return server;
    }

    /// <summary>
    /// Stops the server in immediate mode (every backend killed at once, no checkpoint: a crash, recovered from the WAL at
    /// the next start) and starts it again on the same port and data.
    /// </summary>
    public async Task RestartAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await StartAgainAsync().ConfigureAwait(false);
    }

    /// <summary>Starts the stopped server again on the same port and data (recovering from the WAL after a crash).</summary>
    public Task StartAgainAsync() => _running ? Task.CompletedTask : StartServerAsync();

    /// <summary>Stops the server and deletes its folder.</summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            await StopAsync().ConfigureAwait(false);
        }
        finally
        {
            LocalServer.DeleteFolder(_folder);
        }
    }

    // pg_config names the folder of the server's programs where several versions may be installed.
    private static async Task<string?> BinFolderAsync()
    {
        try
        {
            var output = await ExternalProcess.RunAsync("pg_config", ["--bindir"], TimeSpan.FromSeconds(10)).ConfigureAwait(false);
            return output.Code == 0 ? output.Output.Trim() : null;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    private async Task StartServerAsync()
    {
        // fsync off: the tests crash the server process, never the machine, so what it wrote is in the OS's cache.
        var options = string.Create(CultureInfo.InvariantCulture, $"-p {Port} -k {_folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200");
        await ToolAsync("pg_ctl", "-D", DataFolder, "-l", Path.Combine(_folder, "postgres.log"), "-w", "-t", "60", "-o", options, "start").ConfigureAwait(false);
        _running = true;
    }

    /// <summary>Stops the server in immediate mode (a crash: every backend killed, no checkpoint).</summary>
    public async Task StopAsync()
    {
        if (!_running)
        {
            return;
        }

        await ToolAsync("pg_ctl", "-D", DataFolder, "-m", "immediate", "-w", "-t", "60", "stop").ConfigureAwait(false);
        _running = false;
    }

    private Task<string> ToolAsync(string tool, params string[] arguments) =>
        LocalServer.RunAsync(Path.Combine(_bin, tool), arguments, ToolTimeout, User);
}
