using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// A fixed set of channels on one connection, handed out round-robin. Each channel carries many publishes at once
/// (with confirms, each publish awaits its own confirm, so outstanding confirms overlap). A channel the broker closed
/// on its own (a channel error) is replaced on next use; channels closed with the connection recover with it. A returned
/// message, or a channel closed for a missing exchange, is reported, so the topology is declared again at next use.
/// </summary>
internal sealed class ChannelPool : IAsyncDisposable
{
    private readonly IConnection _connection;
    private readonly IChannel?[] _channels;
    private readonly CreateChannelOptions _channelOptions;
    private readonly ILogger _logger;
    private readonly Action<string, string>? _returned;
    private readonly Action? _notFound;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private int _next = -1;
    private bool _disposed;

    // returned: told the exchange and routing key of a message the broker returned as unroutable; notFound: told when
    // the broker closed a channel for a missing exchange (a publish to it).
    public ChannelPool(IConnection connection, int size, bool confirms, ILogger logger, Action<string, string>? returned = null, Action? notFound = null)
    {
        _connection = connection;
        _channels = new IChannel?[size];
        _logger = logger;
        _returned = returned;
        _notFound = notFound;
        _channelOptions = new CreateChannelOptions(publisherConfirmationsEnabled: confirms, publisherConfirmationTrackingEnabled: confirms);
    }

    public ValueTask<IChannel> GetAsync(CancellationToken cancellationToken)
    {
        // Every publish comes here: the usual case, an open channel, completes without an async state machine.
        var index = (int)((uint)Interlocked.Increment(ref _next) % (uint)_channels.Length);
        var channel = Volatile.Read(ref _channels[index]);
        return IsUsable(channel) ? new ValueTask<IChannel>(channel!) : OpenAsync(index, cancellationToken);
    }

    private async ValueTask<IChannel> OpenAsync(int index, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var channel = _channels[index];
            if (IsUsable(channel))
            {
                return channel!;
            }

            if (channel is not null)
            {
                await DisposeQuietlyAsync(channel).ConfigureAwait(false);
            }

            channel = await _connection.CreateChannelAsync(_channelOptions, cancellationToken).ConfigureAwait(false);
            channel.ChannelShutdownAsync += OnChannelShutdownAsync;
            channel.BasicReturnAsync += OnBasicReturnAsync;
            Volatile.Write(ref _channels[index], channel);
            return channel;
        }
        finally
        {
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            _disposed = true;
            for (var i = 0; i < _channels.Length; i++)
            {
                if (_channels[i] is { } channel)
                {
                    await DisposeQuietlyAsync(channel).ConfigureAwait(false);
                    _channels[i] = null;
                }
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    // While the connection is down the channel is kept: it recovers with the connection, and a publish meanwhile fails.
    private bool IsUsable(IChannel? channel) => channel is not null && (channel.IsOpen || !_connection.IsOpen);

    private Task OnChannelShutdownAsync(object sender, ShutdownEventArgs args)
    {
        if (args.Initiator == ShutdownInitiator.Peer && _connection.IsOpen)
        {
            Log.ChannelClosed(_logger, _connection.ClientProvidedName ?? "", args.ReplyCode, args.ReplyText);

            // Without confirms this close, after the publish returned, is the only sign the exchange is gone.
            if (args.ReplyCode == Constants.NotFound)
            {
                _notFound?.Invoke();
            }
        }

        return Task.CompletedTask;
    }

    private Task OnBasicReturnAsync(object sender, BasicReturnEventArgs args)
    {
        // With confirms the publish itself fails; without them this log line is the only trace of a returned message.
        if (!_channelOptions.PublisherConfirmationTrackingEnabled)
        {
            Log.MessageReturned(_logger, args.Exchange, args.RoutingKey, args.ReplyCode, args.ReplyText);
        }

        _returned?.Invoke(args.Exchange, args.RoutingKey);

        return Task.CompletedTask;
    }

    private static async ValueTask DisposeQuietlyAsync(IChannel channel)
    {
        try
        {
            if (channel.IsOpen)
            {
                await channel.CloseAsync().ConfigureAwait(false);
            }

            await channel.DisposeAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Closing a channel that is already broken must not fail the caller.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }
}
