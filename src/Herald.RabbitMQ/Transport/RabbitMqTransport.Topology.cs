using System.Collections.Concurrent;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Herald.RabbitMQ.Transport;

internal sealed partial class RabbitMqTransport
{
    // Longest per-message delay a queue TTL can hold (x-message-ttl is an unsigned 32-bit number of milliseconds).
    private static readonly TimeSpan MaxDelay = TimeSpan.FromMilliseconds(int.MaxValue);

    // Unused retry queues expire by themselves: after their TTL plus at least this long without being declared again.
    private static readonly TimeSpan RetryQueueIdleLifetime = TimeSpan.FromMinutes(5);

    // Keyed by kind ('q' queue, 'x' exchange, 'b' binding) and names, so a look-up on every send builds no string.
    private readonly ConcurrentDictionary<(char Kind, string Name, string Other), Task> _declared = new();
    private readonly ConcurrentDictionary<string, long> _retryQueuesDeclaredAt = new(StringComparer.Ordinal);

    // Every binding made: an exchange or queue declared again (deleted behind Herald's back) gets its bindings back too,
    // else a publish to the exchange would reach no queue and be dropped without an error.
    private readonly ConcurrentDictionary<(string Topic, string Queue), byte> _bindings = new();

    /// <summary>
    /// Rounds a delay up to whole milliseconds and then to two significant digits (1234 ms becomes 1300 ms), so jittered
    /// back-offs share a bounded set of retry queues while no message comes back earlier than asked.
    /// </summary>
    internal static TimeSpan BucketDelay(TimeSpan delay)
    {
        if (delay > MaxDelay)
        {
            throw new ArgumentOutOfRangeException(nameof(delay), delay, $"RabbitMQ delays are limited to {MaxDelay}.");
        }

        var ms = Math.Max(1L, (long)Math.Ceiling(delay.TotalMilliseconds));
        long scale = 1;
        while (ms / scale >= 100)
        {
            scale *= 10;
        }

        return TimeSpan.FromMilliseconds(Math.Min(int.MaxValue, (ms + scale - 1) / scale * scale));
    }

    // The declaring lambda lives in a method of its own: a lambda capturing a parameter allocates its closure on entry,
    // so here it would on every send, declared or not.
    internal ValueTask EnsureQueueAsync(string queue, CancellationToken cancellationToken) =>
        IsDeclared(('q', queue, string.Empty)) ? ValueTask.CompletedTask : DeclareQueueOnceAsync(queue, cancellationToken);

    private ValueTask DeclareQueueOnceAsync(string queue, CancellationToken cancellationToken) =>
        EnsureDeclaredAsync(
            ('q', queue, string.Empty),
            async channel =>
            {
                await DeclareQueueCoreAsync(channel, queue, QueueArguments()).ConfigureAwait(false);
                await DeclareBindingsAsync(channel, topic: null, queue).ConfigureAwait(false);
            },
            cancellationToken);

    /// <summary>
    /// Declares a queue again, with its bindings, on the broker whatever Herald declared before (after the broker cancelled
    /// its consumer, or on an explicit declare); without <see cref="RabbitMqTransportOptions.DeclareTopology"/>, only checks
    /// that the operator made it.
    /// </summary>
    internal ValueTask RestoreQueueAsync(string queue, CancellationToken cancellationToken)
    {
        if (!_options.DeclareTopology)
        {
            return new ValueTask(DeclareNowAsync(channel => channel.QueueDeclarePassiveAsync(queue)).WaitAsync(cancellationToken));
        }

        ForgetQueue(queue);
        return EnsureQueueAsync(queue, cancellationToken);
    }

    internal void ForgetQueue(string queue)
    {
        _declared.TryRemove(('q', queue, string.Empty), out _);
        _retryQueuesDeclaredAt.TryRemove(queue, out _);
    }

    internal async ValueTask<string> EnsureDeadLetterQueueAsync(string queue, CancellationToken cancellationToken)
    {
        var name = _options.DeadLetterQueueName(queue);
        if (!IsDeclared(('q', name, string.Empty)))
        {
            await EnsureDeclaredAsync(('q', name, string.Empty), channel => DeclareQueueCoreAsync(channel, name, DeadLetterQueueArguments()), cancellationToken).ConfigureAwait(false);
        }

        return name;
    }

    /// <summary>A dead-letter queue's arguments: the queue type's, and its retention when one is set (issue 10).</summary>
    internal Dictionary<string, object?> DeadLetterQueueArguments()
    {
        var arguments = QueueArguments();
        if (_options.DeadLetterQueueMaxLength is { } maxLength)
        {
            arguments["x-max-length"] = maxLength;
            arguments["x-overflow"] = _options.DeadLetterQueueOverflow == RabbitMqOverflow.DropHead ? "drop-head" : "reject-publish";
        }

        return arguments;
    }

    /// <summary>Declares <c>{queue}.retry.{ms}</c>: messages wait there for the delay, then dead-letter back into the queue.</summary>
    internal ValueTask<string> EnsureRetryQueueAsync(string queue, TimeSpan delay, CancellationToken cancellationToken)
    {
        var bucket = BucketDelay(delay);
        return EnsureTtlQueueAsync(_options.RetryQueueName(queue, bucket), bucket, deadLetterExchange: string.Empty, deadLetterRoutingKey: queue, cancellationToken);
    }

    /// <summary>Declares <c>{topic}.delay.{ms}</c>: messages wait there for the delay, then dead-letter into the topic's exchange.</summary>
    private ValueTask<string> EnsureDelayQueueAsync(string topic, TimeSpan delay, CancellationToken cancellationToken)
    {
        var bucket = BucketDelay(delay);
        return EnsureTtlQueueAsync(_options.DelayQueueName(topic, bucket), bucket, deadLetterExchange: topic, deadLetterRoutingKey: null, cancellationToken);
    }

    private async ValueTask<string> EnsureTtlQueueAsync(string name, TimeSpan ttl, string deadLetterExchange, string? deadLetterRoutingKey, CancellationToken cancellationToken)
    {
        if (!_options.DeclareTopology)
        {
            return name;
        }

        // The queue expires when unused for ttl + idle; declaring it again restarts that clock. Re-declared once half the
        // idle time has passed, every message published here has left (after its TTL) before the queue can expire.
        var idle = ttl > RetryQueueIdleLifetime ? ttl : RetryQueueIdleLifetime;
        var now = TimeProvider.GetTimestamp();
        if (_retryQueuesDeclaredAt.TryGetValue(name, out var declaredAt) && TimeProvider.GetElapsedTime(declaredAt, now) < idle / 2)
        {
            return name;
        }

        var arguments = QueueArguments();
        arguments["x-message-ttl"] = (long)ttl.TotalMilliseconds;
        // Not capped: ttl + idle is at most 2 x MaxDelay = 2^32 - 2 ms, within RabbitMQ's limit of 2^32 - 1 ms, and a
        // lower cap would let the queue expire, messages and all, before those published up to idle / 2 later leave it.
        arguments["x-expires"] = (long)(ttl + idle).TotalMilliseconds;
        arguments["x-dead-letter-exchange"] = deadLetterExchange;
        if (deadLetterRoutingKey is not null)
        {
            arguments["x-dead-letter-routing-key"] = deadLetterRoutingKey;
        }

        if (_options.QueueType == RabbitMqQueueType.Quorum)
        {
            // Quorum queues dead-letter at most once unless told otherwise; a retry must not be lost on the way back.
            arguments["x-dead-letter-strategy"] = "at-least-once";
            arguments["x-overflow"] = "reject-publish";
        }

        await DeclareNowAsync(channel => DeclareQueueCoreAsync(channel, name, arguments)).WaitAsync(cancellationToken).ConfigureAwait(false);
        _retryQueuesDeclaredAt[name] = now;
        return name;
    }

    private ValueTask EnsureExchangeAsync(string topic, CancellationToken cancellationToken) =>
        IsDeclared(('x', topic, string.Empty)) ? ValueTask.CompletedTask : DeclareExchangeOnceAsync(topic, cancellationToken);

    private ValueTask DeclareExchangeOnceAsync(string topic, CancellationToken cancellationToken) =>
        EnsureDeclaredAsync(
            ('x', topic, string.Empty),
            async channel =>
            {
                await DeclareExchangeCoreAsync(channel, topic).ConfigureAwait(false);
                await DeclareBindingsAsync(channel, topic, queue: null).ConfigureAwait(false);
            },
            cancellationToken);

    private void ForgetExchange(string topic) => _declared.TryRemove(('x', topic, string.Empty), out _);

    // The broker's close names the missing exchange only in its text: every exchange is declared again at next use.
    private void ForgetExchanges()
    {
        foreach (var key in _declared.Keys)
        {
            if (key.Kind == 'x')
            {
                _declared.TryRemove(key, out _);
            }
        }
    }

    private ValueTask EnsureBindingAsync(string topic, string queue, CancellationToken cancellationToken) =>
        EnsureDeclaredAsync(
            ('b', topic, queue),
            async channel =>
            {
                await channel.QueueBindAsync(queue, topic, string.Empty).ConfigureAwait(false);
                _bindings.TryAdd((topic, queue), 0);
            },
            cancellationToken);

    /// <summary>
    /// Declares again the bindings made from <paramref name="topic"/> or to <paramref name="queue"/>, with the exchange and
    /// queue at each end, as either may have been deleted too; a first declaration finds none.
    /// </summary>
    private async Task DeclareBindingsAsync(IChannel channel, string? topic, string? queue)
    {
        foreach (var (boundTopic, boundQueue) in _bindings.Keys)
        {
            if (boundTopic == topic || boundQueue == queue)
            {
                await DeclareExchangeCoreAsync(channel, boundTopic).ConfigureAwait(false);
                await DeclareQueueCoreAsync(channel, boundQueue, QueueArguments()).ConfigureAwait(false);
                await channel.QueueBindAsync(boundQueue, boundTopic, string.Empty).ConfigureAwait(false);
            }
        }
    }

    private Dictionary<string, object?> QueueArguments()
    {
        // Classic queues get no x-queue-type argument, so they match queues other clients declared without one.
        var arguments = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (_options.QueueType == RabbitMqQueueType.Quorum)
        {
            arguments["x-queue-type"] = "quorum";
        }

        return arguments;
    }

    private static async Task DeclareExchangeCoreAsync(IChannel channel, string topic)
    {
        try
        {
            await channel.ExchangeDeclareAsync(topic, ExchangeType.Fanout, durable: true, autoDelete: false).ConfigureAwait(false);
        }
        catch (OperationInterruptedException e) when (e.ShutdownReason?.ReplyCode == Constants.PreconditionFailed)
        {
            throw new HeraldException($"RabbitMQ refused to declare exchange '{topic}' as a durable fanout exchange: {e.ShutdownReason.ReplyText}. An exchange of that name with other settings already exists.", e);
        }
    }

    private static async Task DeclareQueueCoreAsync(IChannel channel, string queue, IDictionary<string, object?> arguments)
    {
        try
        {
            await channel.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, arguments).ConfigureAwait(false);
        }
        catch (OperationInterruptedException e) when (e.ShutdownReason?.ReplyCode == Constants.PreconditionFailed)
        {
            throw new HeraldException(
                $"RabbitMQ refused to declare queue '{queue}' ({string.Join(", ", arguments.Select(a => $"{a.Key}={a.Value}"))}): " +
                $"{e.ShutdownReason.ReplyText}. A queue of that name with other settings already exists.",
                e);
        }
    }

    private bool IsDeclared((char Kind, string Name, string Other) key) =>
        !_options.DeclareTopology || (_declared.TryGetValue(key, out var existing) && existing.IsCompletedSuccessfully);

    private async ValueTask EnsureDeclaredAsync((char Kind, string Name, string Other) key, Func<IChannel, Task> declare, CancellationToken cancellationToken)
    {
        if (!_options.DeclareTopology)
        {
            return;
        }

        if (_declared.TryGetValue(key, out var existing) && existing.IsCompletedSuccessfully)
        {
            return;
        }

        // One declaration per name, shared by concurrent callers; a failed one is forgotten so the next call tries again.
        var task = _declared.GetOrAdd(key, _ => DeclareNowAsync(declare));
        try
        {
            await task.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch when (task.IsFaulted || task.IsCanceled)
        {
            _declared.TryRemove(new KeyValuePair<(char Kind, string Name, string Other), Task>(key, task));
            throw;
        }
    }

    private async Task DeclareNowAsync(Func<IChannel, Task> declare)
    {
        try
        {
            var channel = await _topology!.GetAsync(CancellationToken.None).ConfigureAwait(false);
            await declare(channel).ConfigureAwait(false);
        }
        catch (Exception e) when (IsBrokerFailure(e))
        {
            throw new HeraldException($"Declaring a queue, exchange or binding on RabbitMQ at {Endpoint} failed ({e.Message}). Retry when the connection is back.", e);
        }
    }

    /// <summary>A failure of the connection or the broker (as opposed to a Herald error or a cancellation).</summary>
    internal static bool IsBrokerFailure(Exception e) =>
        e is RabbitMQClientException or IOException or TimeoutException or ObjectDisposedException or InvalidOperationException;
}
