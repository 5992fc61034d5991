using Herald.Processes.Servers;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.Conformance.Faults;

/// <summary>
/// What a fault test sets up around its private server: a log kept for the test's output (and watched for signals), a
/// temporary folder, the host under test; disposed in order: the log printed, the host stopped, the server stopped, the
/// folder deleted.
/// </summary>
public sealed class FaultScene(ITestOutputHelper output, LogLevel minimum = LogLevel.Warning) : IAsyncDisposable
{
    private IHost? _host;

    /// <summary>The host's log at or above the level given (Npgsql's at warning or above).</summary>
    public TestOutputLogger Log { get; } = new(minimum);

    /// <summary>A temporary folder of this test (for SQLite files), deleted at the end.</summary>
    public string Folder { get; } = Directory.CreateTempSubdirectory("herald-fault-").FullName;

    /// <summary>The private server; stopped and deleted at the end.</summary>
    public IAsyncDisposable? Server { get; set; }

    /// <summary>Builds a host logging to <see cref="Log"/>, with <paramref name="configure"/> adding its services, and starts it.</summary>
    public async Task<IHost> StartHostAsync(Action<IServiceCollection> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(Log).AddFilter("Npgsql", LogLevel.Warning);
        configure(builder.Services);
        _host = builder.Build();
        await _host.StartAsync().ConfigureAwait(false);
        return _host;
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        Log.WriteTo(output);
        if (_host is not null)
        {
            await _host.StopAsync().ConfigureAwait(false);
            _host.Dispose();
        }

        if (Server is not null)
        {
            await Server.DisposeAsync().ConfigureAwait(false);
        }

        LocalServer.DeleteFolder(Folder);
    }
}
