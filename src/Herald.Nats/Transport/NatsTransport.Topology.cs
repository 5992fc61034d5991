using System.Collections.Concurrent;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

namespace Herald.Nats.Transport;

internal sealed partial class NatsTransport
{
    private readonly ConcurrentDictionary<string, Lazy<Task<QueueTarget>>> _queues = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Lazy<Task<string>>> _topics = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Lazy<Task>> _streams = new(StringComparer.Ordinal);

    // The subjects of each stream in _streams, so a publish no stream took forgets the one made for its subject.
    private readonly ConcurrentDictionary<string, string[]> _streamSubjects = new(StringComparer.Ordinal);

    // The topics bound to each queue of its own stream by this process: a queue stream made again sources them again.
    private readonly ConcurrentDictionary<(string Topic, string Queue), bool> _bindings = new();
    private NatsBindingLock? _bindingLock;

    /// <summary>The lock on changing a queue stream's sources (made on first use: only a process that binds needs its bucket).</summary>
    private NatsBindingLock BindingLock => _bindingLock ??= new NatsBindingLock(JetStream, Names.BindingLockBucket);

    /// <summary>The queue's stream made sure of (once per transport; a failure is tried again on next use).</summary>
    internal ValueTask<QueueTarget> EnsureQueueAsync(string queue, CancellationToken cancellationToken)
    {
        if (_options.Queues.TryGetValue(queue, out var mapping))
        {
            // A declared stream (or one an operator owns): nothing to make.
            return ValueTask.FromResult(new QueueTarget(mapping.Stream, mapping.Subject, mapping.FilterSubject, mapping.StartFrom, mapping.OrderBySubject));
        }

        // Looked up first: GetOrAdd's factory captures this transport, a closure allocated on every send otherwise.
        if (!_queues.TryGetValue(queue, out var lazy))
        {
            lazy = _queues.GetOrAdd(queue, q => new Lazy<Task<QueueTarget>>(() => CreateQueueAsync(q)));
        }

        return lazy.Value.IsCompletedSuccessfully ? ValueTask.FromResult(lazy.Value.Result) : new(AwaitOrForgetAsync(_queues, queue, lazy, cancellationToken));
    }

    private async Task<QueueTarget> CreateQueueAsync(string queue)
    {
        var stream = Names.QueueStream(queue);
        var subject = Names.QueueSubject(queue);
        await EnsureStreamAsync(_options.QueueStream.For(stream, subject), CancellationToken.None).ConfigureAwait(false);

        // Made again after it was deleted (none are known on first use): without its sources, bound topics no longer reach it.
        foreach (var (topic, bound) in _bindings.Keys)
        {
            if (bound == queue)
            {
                await RebindAsync(topic, stream).ConfigureAwait(false);
            }
        }

        // No filter: the stream also holds what it sources from bound topics, under the topics' subjects.
        return new QueueTarget(stream, subject, FilterSubject: null, NatsStartPosition.All, OrderBySubject: false);
    }

    /// <summary>A binding made again on a queue stream made again; the topic's stream too, if it went with it.</summary>
    private async Task RebindAsync(string topic, string queueStream)
    {
        // Asked of the server, not the cache: an operator deleting the queue's stream may have deleted the topic's as well.
        ForgetStreamOf(Names.TopicSubject(topic));
        await EnsureTopicAsync(topic, CancellationToken.None).ConfigureAwait(false);
        await AddSourceAsync(topic, queueStream, CancellationToken.None).ConfigureAwait(false);
    }

    private ValueTask<string> EnsureTopicAsync(string topic, CancellationToken cancellationToken)
    {
        if (_options.Topics.TryGetValue(topic, out var subject))
        {
            return ValueTask.FromResult(subject);
        }

        if (_topics.TryGetValue(topic, out var known) && known.Value.IsCompletedSuccessfully)
        {
            return ValueTask.FromResult(known.Value.Result);
        }

        var lazy = _topics.GetOrAdd(topic, t => new Lazy<Task<string>>(async () =>
        {
            // Limits retention (TopicStream): a bound queue's stream copies the topic through a consumer the server sets up
            // after the binding returns, and sets up again after a restart; the topic keeps each message until then.
            await EnsureStreamAsync(_options.TopicStream.For(Names.TopicStream(t), Names.TopicSubject(t)), CancellationToken.None).ConfigureAwait(false);
            return Names.TopicSubject(t);
        }));
        return lazy.Value.IsCompletedSuccessfully ? ValueTask.FromResult(lazy.Value.Result) : new(AwaitOrForgetAsync(_topics, topic, lazy, cancellationToken));
    }

    /// <inheritdoc />
    protected override async ValueTask BindCoreAsync(string topic, string queue, CancellationToken cancellationToken)
    {
        var mapped = _options.Topics.TryGetValue(topic, out var topicSubject);
        if (_options.Queues.TryGetValue(queue, out var mapping))
        {
            // A queue on a declared stream takes a topic by its filter: binding only checks that it does.
            if (mapped && NatsNames.Matches(mapping.FilterSubject, topicSubject!))
            {
                return;
            }

            throw new InvalidOperationException(
                $"Queue '{queue}' reads stream '{mapping.Stream}' filtered to '{mapping.FilterSubject}'; topic '{topic}' "
                + (mapped ? $"publishes to '{topicSubject}', which that filter does not take." : "is not in NatsTransportOptions.Topics.")
                + " Map the topic to a subject the queue's filter takes.");
        }

        if (mapped)
        {
            throw new InvalidOperationException(
                $"Topic '{topic}' publishes to '{topicSubject}' of a declared stream; queue '{queue}' has a stream of its own and cannot take it. "
                + "Map the queue in NatsTransportOptions.Queues to that stream with a filter that takes the subject.");
        }

        await EnsureTopicAsync(topic, cancellationToken).ConfigureAwait(false);
        var target = await EnsureQueueAsync(queue, cancellationToken).ConfigureAwait(false);
        await AddSourceAsync(topic, target.Stream, cancellationToken).ConfigureAwait(false);
        _bindings.TryAdd((topic, queue), true);
    }

    /// <summary>
    /// Makes the queue's stream <paramref name="queueStream"/> source the topic's stream from now on: every message published
    /// to the topic is copied into it. Its sources are read and written back with one more, under a lock no other process
    /// binding to it holds meanwhile.
    /// </summary>
    private async Task AddSourceAsync(string topic, string queueStream, CancellationToken cancellationToken)
    {
        var topicStream = Names.TopicStream(topic);
        await using var held = await BindingLock.AcquireAsync(queueStream, cancellationToken).ConfigureAwait(false);
        var stream = await JetStream.GetStreamAsync(queueStream, cancellationToken: cancellationToken).ConfigureAwait(false);
        var config = stream.Info.Config;
        var sources = config.Sources?.ToList() ?? [];
        if (sources.Any(s => s.Name == topicStream))
        {
            // Bound already (by this process or another): the source keeps its position, so nothing is copied twice or skipped.
            return;
        }

        // The server sets up the source's consumer after the update returns; the topic stream keeps what is published
        // meanwhile, and the source starts after the topic's last message now, by the server's clock, not this process's.
        var topicInfo = (await JetStream.GetStreamAsync(topicStream, cancellationToken: cancellationToken).ConfigureAwait(false)).Info;
        if (topicInfo.Config.Retention != StreamConfigRetention.Limits)
        {
            Log.TopicStreamNotKept(Logger, topicStream, topic);
        }

        sources.Add(new StreamSource { Name = topicStream, OptStartTime = NatsTopology.StartAfterLast(topicInfo) });
        config.Sources = sources;
        await JetStream.UpdateStreamAsync(config, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The queue's durable consumer: the one that exists (its start position kept), else a new one; and the stream keeping
    /// its max-deliveries advisories, when it has a limit.
    /// </summary>
    private async Task<INatsJSConsumer> EnsureDurableAsync(string queue, QueueTarget target, CancellationToken cancellationToken)
    {
        var name = NatsNames.Durable(queue);
        INatsJSConsumer durable;
        try
        {
            durable = await JetStream.GetConsumerAsync(target.Stream, name, cancellationToken).ConfigureAwait(false);
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.ConsumerNotFound)
        {
            durable = await JetStream.CreateOrUpdateConsumerAsync(target.Stream, NatsTopology.DurableConfig(name, target, _options), cancellationToken).ConfigureAwait(false);
        }

        // Made by another process (or an earlier deployment) with another limit: not changed here (its maker's settings hold,
        // as its ack wait's do), but the server gives a message up by its limit, so the consumer goes by that one.
        var onTheServer = durable.Info.Config.MaxDeliver > 0 ? durable.Info.Config.MaxDeliver : (long?)null;
        if (onTheServer != _options.MaxDeliver)
        {
            Log.DurableMaxDeliverDiffers(Logger, name, target.Stream, queue, LimitText(onTheServer), LimitText(_options.MaxDeliver));
        }

        await EnsureMaxDeliveriesCaptureAsync(queue, target, durable, cancellationToken).ConfigureAwait(false);
        return durable;
    }

    private static string LimitText(long? maxDeliver) => maxDeliver?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none";

    /// <summary>
    /// Makes the queue's stream (with the sources of the topics bound to it here) and its durable consumer again, after a
    /// pull found them gone (deleted behind this process's back): as a start would, once the made stream is forgotten; a
    /// mapped queue's durable resumes after the sequence the lost one (made at <paramref name="lostCreated"/>) had every
    /// message acked through, <paramref name="ackedThrough"/>, instead (<see cref="ResumeAfter"/>).
    /// </summary>
    internal async Task<INatsJSConsumer> RemakeDurableAsync(string queue, DateTimeOffset lostCreated, ulong ackedThrough, CancellationToken cancellationToken)
    {
        ForgetStreamOf(Names.QueueSubject(queue));
        var target = await EnsureQueueAsync(queue, cancellationToken).ConfigureAwait(false);
        if (_options.Queues.ContainsKey(queue))
        {
            var stream = await GetOrDeclareAgainAsync(target.Stream, cancellationToken).ConfigureAwait(false);
            target = ResumeAfter(target, lostCreated, ackedThrough, stream.Info);
        }

        return await EnsureDurableAsync(queue, target, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// A mapped queue's stream; one declared in <see cref="NatsTransportOptions.Streams"/> and gone is declared again, as at
    /// the start. An operator's stream (not declared) is not Herald's to make: its absence is thrown.
    /// </summary>
    private async Task<INatsJSStream> GetOrDeclareAgainAsync(string name, CancellationToken cancellationToken)
    {
        try
        {
            return await JetStream.GetStreamAsync(name, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.StreamNotFound && _options.Streams.FirstOrDefault(s => s.Name == name) is { } declared)
        {
            Log.DeclaredStreamRemade(Logger, name);
            return await JetStream.CreateOrUpdateStreamAsync(NatsTopology.StreamConfig(declared), cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Where a mapped queue's durable made again starts: after the stream sequence through which the lost one had every
    /// message acked (as last read: at the start, or at the lag gauge's last refresh; never ahead of the server). Its start
    /// position would skip what was stored and not yet delivered, or handed back, before it was made again
    /// (<see cref="NatsStartPosition.New"/>, or a time) or deliver the stream's whole history again (<see cref="NatsStartPosition.All"/>);
    /// this delivers again only what was acked since that reading. Not on a work queue (it takes only consumers that deliver
    /// all, and keeps no acked message) or a stream made after the lost consumer (its sequences start over).
    /// </summary>
    private static QueueTarget ResumeAfter(QueueTarget target, DateTimeOffset lostCreated, ulong ackedThrough, StreamInfo stream) =>
        stream.Config.Retention == StreamConfigRetention.Workqueue || stream.Created > lostCreated
            ? target
            : target with { StartFrom = NatsStartPosition.FromSequence(ackedThrough + 1) };

    /// <summary>
    /// Creates the stream unless it exists (as it is: another process may have added sources to it). Fails with a
    /// <see cref="HeraldException"/> naming the stream, as a failed publish does, when the server refuses it.
    /// </summary>
    internal Task EnsureStreamAsync(NatsStreamOptions stream, CancellationToken cancellationToken)
    {
        var lazy = _streams.GetOrAdd(stream.Name, _ => new Lazy<Task>(() => CreateStreamUnlessItExistsAsync(stream)));
        return lazy.Value.IsCompletedSuccessfully ? Task.CompletedTask : AwaitOrForgetAsync(_streams, stream.Name, lazy, cancellationToken);
    }

    private async Task CreateStreamUnlessItExistsAsync(NatsStreamOptions stream)
    {
        _streamSubjects[stream.Name] = [.. stream.Subjects];
        try
        {
            try
            {
                await JetStream.GetStreamAsync(stream.Name, cancellationToken: CancellationToken.None).ConfigureAwait(false);
                return;
            }
            catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.StreamNotFound)
            {
            }

            try
            {
                await JetStream.CreateStreamAsync(NatsTopology.StreamConfig(stream), CancellationToken.None).ConfigureAwait(false);
            }
            catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.StreamNameInUse)
            {
                // Made by another process meanwhile.
            }
            catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.StreamSubjectOverlap)
            {
                // A create racing another process's for the same stream can be refused as overlapping that stream's
                // subjects rather than as its name in use (two processes binding at once): fine if that is the stream.
                if (!await ExistsAsync(stream.Name, CancellationToken.None).ConfigureAwait(false))
                {
                    throw;
                }
            }
        }
        catch (Exception e) when (e is NatsException or NatsJSException)
        {
            // The client's own exception would reach a send's caller, who is told a HeraldException elsewhere.
            throw new HeraldException($"Could not make stream '{stream.Name}' (subjects {string.Join(", ", stream.Subjects)}) on NATS at {Endpoint}: {e.Message}", e);
        }
    }

    /// <summary>
    /// Forgets the made stream published to on <paramref name="subject"/> (a queue's, topic's, delay or dead-letter stream),
    /// and the queue or topic it was made for: no stream took a publish there (deleted behind this process's back, or lost
    /// by JetStream), and the cache would otherwise fail every later send until a restart. The next use asks the server and
    /// makes the stream again. A mapped queue or topic is the operator's and is never made, so it is not cached here.
    /// </summary>
    private void ForgetStreamOf(string subject)
    {
        foreach (var (stream, subjects) in _streamSubjects)
        {
            if (Array.Exists(subjects, taken => NatsNames.Matches(taken, subject)))
            {
                _streams.TryRemove(stream, out _);
            }
        }

        foreach (var (queue, lazy) in _queues)
        {
            if (Names.QueueSubject(queue) == subject)
            {
                _queues.TryRemove(new KeyValuePair<string, Lazy<Task<QueueTarget>>>(queue, lazy));
            }
        }

        foreach (var (topic, lazy) in _topics)
        {
            if (Names.TopicSubject(topic) == subject)
            {
                _topics.TryRemove(new KeyValuePair<string, Lazy<Task<string>>>(topic, lazy));
            }
        }
    }

    private async Task<bool> ExistsAsync(string stream, CancellationToken cancellationToken)
    {
        try
        {
            await JetStream.GetStreamAsync(stream, cancellationToken: cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.StreamNotFound)
        {
            return false;
        }
    }

    /// <summary>Awaits a cached creation; a failed one is forgotten, so the next use tries again.</summary>
    private static async Task<T> AwaitOrForgetAsync<T>(ConcurrentDictionary<string, Lazy<Task<T>>> cache, string key, Lazy<Task<T>> lazy, CancellationToken cancellationToken)
    {
        try
        {
            return await lazy.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch when (lazy.Value.IsFaulted)
        {
            cache.TryRemove(new KeyValuePair<string, Lazy<Task<T>>>(key, lazy));
            throw;
        }
    }

    private static async Task AwaitOrForgetAsync(ConcurrentDictionary<string, Lazy<Task>> cache, string key, Lazy<Task> lazy, CancellationToken cancellationToken)
    {
        try
        {
            await lazy.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch when (lazy.Value.IsFaulted)
        {
            cache.TryRemove(new KeyValuePair<string, Lazy<Task>>(key, lazy));
            throw;
        }
    }
}
