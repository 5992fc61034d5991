using System.Runtime.CompilerServices;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Herald.RabbitMQ.Transport;

internal sealed partial class RabbitMqTransport
{
    // Exchange and queue names in UTF-8, encoded once: the client would encode (and allocate) each one on every publish.
    private readonly BoundedCache<string, CachedString> _names = new(static name => name.Length == 0 ? CachedString.Empty : new CachedString(name));

    /// <summary>Publishes a retry or dead-letter copy to a queue, confirmed even when sends are not (its original is acked next).</summary>
    internal ValueTask RepublishAsync(string queue, BasicProperties properties, ReadOnlyMemory<byte> body, MessageLabel what, CancellationToken cancellationToken) =>
        PublishCoreAsync(_republishers!, string.Empty, queue, mandatory: true, properties, body, what, cancellationToken);

    /// <summary>
    /// Publishes one message on a channel of <paramref name="channels"/> and, with confirms on there, completes only when
    /// the broker has it. Any failure throws: a returned (unroutable) or nacked message was not stored, and one interrupted
    /// by a connection loss may or may not have been, so the caller retries (consumers deduplicate by message id).
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask PublishCoreAsync(
        ChannelPool channels,
        string exchange,
        string routingKey,
        bool mandatory,
        BasicProperties properties,
        ReadOnlyMemory<byte> body,
        MessageLabel what,
        CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        try
        {
            var channel = await channels.GetAsync(cancellationToken).ConfigureAwait(false);
            await channel.BasicPublishAsync(_names.Get(exchange), _names.Get(routingKey), mandatory, properties, body, cancellationToken).ConfigureAwait(false);
        }
        catch (PublishException e) when (e.IsReturn)
        {
            Forget(exchange, routingKey);
            var reply = e is PublishReturnException r ? $"{r.ReplyCode} {r.ReplyText}" : "NO_ROUTE";
            throw new HeraldException(
                $"RabbitMQ could not route {what} to {Target(exchange, routingKey)} and returned it ({reply}); it was not stored. Does the queue exist?", e);
        }
        catch (PublishException e)
        {
            throw new HeraldException($"RabbitMQ refused {what} for {Target(exchange, routingKey)} (negative confirm); it was not stored. Retry the send.", e);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e) when (IsBrokerFailure(e))
        {
            Forget(exchange, routingKey);
            throw new HeraldException(
                $"Publishing {what} to {Target(exchange, routingKey)} on RabbitMQ at {Endpoint} failed before it was confirmed ({e.Message}); it may not have been stored. Retry the send.", e);
        }
    }

    // Only for error messages: built when one is thrown, not on every publish.
    private static string Target(string exchange, string routingKey) =>
        exchange.Length == 0 ? $"queue '{routingKey}'" : $"exchange '{exchange}'";

    private void Forget(string exchange, string routingKey)
    {
        // The next send declares the queue or exchange again, in case it was deleted behind our back.
        if (exchange.Length == 0)
        {
            ForgetQueue(routingKey);
        }
        else
        {
            ForgetExchange(exchange);
        }
    }
}

/// <summary>Names a message in error messages; formatted only when one is thrown.</summary>
internal readonly record struct MessageLabel(Guid Id, string? Type, string? ForeignId)
{
    public override string ToString() => Type is not null ? $"message {Id} ({Type})" : $"message '{ForeignId}'";
}
