using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Internal;

/// <summary>Helpers for the components adapters create without dependency injection (stores, transports).</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class Components
{
    /// <summary>
    /// Starts a component just created (opens its file, migrates its schema, connects) and returns it; when the start fails,
    /// disposes it before the failure propagates, so a caller never holds a half-started component.
    /// </summary>
    public static async Task<TComponent> StartOrDisposeAsync<TComponent>(TComponent component, Func<TComponent, CancellationToken, Task> start, CancellationToken cancellationToken)
        where TComponent : IAsyncDisposable
    {
        ArgumentNullException.ThrowIfNull(component);
        ArgumentNullException.ThrowIfNull(start);
        try
        {
            await start(component, cancellationToken).ConfigureAwait(false);
            return component;
        }
        catch
        {
            await component.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Creates a component of its options with <paramref name="timeProvider"/> and <paramref name="loggerFactory"/> (the system
    /// clock and no logging when null), then starts it as <see cref="StartOrDisposeAsync"/> does: the whole of an adapter's
    /// factory method.
    /// </summary>
    public static async Task<TComponent> CreateStartedAsync<TOptions, TComponent>(
        TOptions options,
        TimeProvider? timeProvider,
        ILoggerFactory? loggerFactory,
        Func<TOptions, TimeProvider, ILoggerFactory, TComponent> create,
        Func<TComponent, CancellationToken, Task> start,
        CancellationToken cancellationToken)
        where TComponent : IAsyncDisposable
    {
        ArgumentNullException.ThrowIfNull(create);
        var component = create(options, timeProvider ?? TimeProvider.System, loggerFactory ?? NullLoggerFactory.Instance);
        return await StartOrDisposeAsync(component, start, cancellationToken).ConfigureAwait(false);
    }
}
