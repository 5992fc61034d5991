using System.Globalization;

namespace Herald.Processes.Servers;

/// <summary>
/// A private RabbitMQ node (its own node name, ports, data, logs, Erlang cookie and no plugins) on free ports of
/// 127.0.0.1, for tests that stop and start it. It runs as the current user from the package's own scripts (the /usr/sbin
/// wrappers would switch to the rabbitmq user and its cookie), with HOME set to its folder so that the node and
/// rabbitmqctl share a cookie of their own. epmd, shared by every Erlang node on the machine, is left running.
/// </summary>
public sealed class RabbitMqServer : IAsyncDisposable
{
    private static readonly TimeSpan StartTimeout = TimeSpan.FromSeconds(60);

    private readonly string _bin;
    private readonly string _folder;
    private readonly int _distributionPort;
    private bool _running;

    private RabbitMqServer(string bin, string folder, int port, int distributionPort)
    {
        _bin = bin;
        _folder = folder;
        Port = port;
        _distributionPort = distributionPort;
        NodeName = $"heraldfault-{Guid.NewGuid().ToString("N")[..8]}@localhost";
    }

    /// <summary>The AMQP port on 127.0.0.1.</summary>
    public int Port { get; }

    /// <summary>The Erlang node name (for rabbitmqctl -n).</summary>
    public string NodeName { get; }

    /// <summary>The AMQP URI of the default guest user (allowed from loopback).</summary>
    public Uri AmqpUri => new($"amqp://guest:guest@127.0.0.1:{Port}/");

    private string PidFile => Path.Combine(_folder, "node.pid");

    /// <summary>Starts a new node in a new temporary folder and waits until it has booted.</summary>
    public static async Task<RabbitMqServer> StartAsync()
    {
        var server = LocalServer.FindProgram("rabbitmq-server", "rabbitmq-server", "/usr/lib/rabbitmq/bin", "/usr/local/opt/rabbitmq/sbin", "/opt/homebrew/opt/rabbitmq/sbin");
        var node = new RabbitMqServer(Path.GetDirectoryName(server)!, await LocalServer.CreateFolderAsync("herald-rabbitmq").ConfigureAwait(false), LocalServer.FreePort(), LocalServer.FreePort());
        try
        {
            var cookie = Path.Combine(node._folder, ".erlang.cookie");
            await File.WriteAllTextAsync(cookie, "HERALDFAULT" + Guid.NewGuid().ToString("N").ToUpperInvariant()).ConfigureAwait(false);
            if (!OperatingSystem.IsWindows())
            {
                // Erlang refuses a cookie others can read.
                File.SetUnixFileMode(cookie, UnixFileMode.UserRead);
            }

            await File.WriteAllTextAsync(Path.Combine(node._folder, "enabled_plugins"), "[].\n").ConfigureAwait(false);
            await File.WriteAllTextAsync(Path.Combine(node._folder, "rabbitmq-env.conf"), string.Empty).ConfigureAwait(false);
            await File.WriteAllTextAsync(
                Path.Combine(node._folder, "rabbitmq.conf"),
                string.Create(CultureInfo.InvariantCulture, $"listeners.tcp.1 = 127.0.0.1:{node.Port}\nloopback_users.guest = true\n")).ConfigureAwait(false);
            await node.StartNodeAsync().ConfigureAwait(false);
        }
        catch
        {
            await node.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return node;
    }

    /// <summary>Stops the node (rabbitmqctl stop: connections are closed, the OS process ends) and starts it again on the same ports and data.</summary>
    public async Task RestartAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await StartAgainAsync().ConfigureAwait(false);
    }

    /// <summary>Starts the stopped node again on the same ports and data, and waits until it has booted.</summary>
    public Task StartAgainAsync() => StartNodeAsync();

    /// <summary>Stops the node and deletes its folder.</summary>
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

    private async Task StartNodeAsync()
    {
        if (_running)
        {
            return;
        }

        // Through sh, so that the detached node keeps none of this process's pipes open.
        var start = $"exec \"{Path.Combine(_bin, "rabbitmq-server")}\" -detached </dev/null >>\"{Path.Combine(_folder, "start.log")}\" 2>&1";
        await LocalServer.RunAsync("sh", ["-c", start], StartTimeout, user: null, Environment()).ConfigureAwait(false);
        _running = true;
        await LocalServer.WaitUntilAsync(
            async () => (await ExternalProcess.RunAsync(Path.Combine(_bin, "rabbitmqctl"), ["-n", NodeName, "-q", "await_startup", "--timeout", "5"], StartTimeout, Environment()).ConfigureAwait(false)).Code == 0,
            $"RabbitMQ node {NodeName} on 127.0.0.1:{Port}",
            StartTimeout).ConfigureAwait(false);
    }

    /// <summary>Stops the node (rabbitmqctl stop: connections are closed, the OS process ends); returns once it has exited.</summary>
    public async Task StopAsync()
    {
        if (!_running)
        {
            return;
        }

        // With the pid file, stop returns once the OS process has exited.
        await LocalServer.RunAsync(Path.Combine(_bin, "rabbitmqctl"), ["-n", NodeName, "-q", "stop", PidFile], StartTimeout, user: null, Environment()).ConfigureAwait(false);
        _running = false;
    }

    private (string Name, string Value)[] Environment() =>
    [
        ("HOME", _folder),
        ("RABBITMQ_NODENAME", NodeName),
        ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1"),
        ("RABBITMQ_NODE_PORT", Port.ToString(CultureInfo.InvariantCulture)),
        ("RABBITMQ_DIST_PORT", _distributionPort.ToString(CultureInfo.InvariantCulture)),
        ("RABBITMQ_MNESIA_BASE", Path.Combine(_folder, "mnesia")),
        ("RABBITMQ_LOG_BASE", Path.Combine(_folder, "log")),
        ("RABBITMQ_PID_FILE", PidFile),
        ("RABBITMQ_ENABLED_PLUGINS_FILE", Path.Combine(_folder, "enabled_plugins")),
        ("RABBITMQ_CONFIG_FILE", Path.Combine(_folder, "rabbitmq.conf")),
        ("RABBITMQ_CONF_ENV_FILE", Path.Combine(_folder, "rabbitmq-env.conf")),
        ("RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}"),
        ("ERL_EPMD_ADDRESS", "127.0.0.1"),
    ];
}
