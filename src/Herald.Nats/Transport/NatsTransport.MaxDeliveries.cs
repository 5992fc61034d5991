using System.Globalization;
using System.Text;
using System.Text.Json;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

namespace Herald.Nats.Transport;

/// <summary>
/// Messages that reach a durable consumer's <c>MaxDeliver</c> without being settled on the last delivery (their process
/// was stopped, or the ack wait ran out) are never delivered again, and the server says so only in a core NATS
/// advisory. Each queue whose consumer has a limit keeps those advisories in a small work-queue stream of its own,
/// declared with the queue's consumer; the drain moves the message each names (read back by stream sequence) into the
/// dead-letter store with the reason, then removes the advisory, so it is moved once.
/// </summary>
internal sealed partial class NatsTransport
{
    // JetStream's "no message found".
    private const int MessageNotFound = 10037;

    /// <summary>
    /// Makes sure the stream that keeps the queue consumer's max-deliveries advisories exists, when the consumer has a limit.
    /// Asked of the server each time (a consumer's start, its durable made again, each lag refresh), not answered from the
    /// streams made: an advisory published while it is gone is lost, the only record of its message. One deleted behind this
    /// process's back is logged, forgotten and made again as a deleted queue stream is.
    /// </summary>
    internal async Task EnsureMaxDeliveriesCaptureAsync(string queue, QueueTarget target, INatsJSConsumer durable, CancellationToken cancellationToken)
    {
        // The consumer as the server has it: another process may have made it, with or without a limit.
        if (durable.Info.Config.MaxDeliver <= 0)
        {
            return;
        }

        var name = Names.MaxDeliveriesStream(queue);
        var subject = NatsNames.MaxDeliveriesAdvisory(target.Stream, durable.Info.Name);

        // Not made here yet: the creation itself asks the server first.
        if (_streams.ContainsKey(name))
        {
            if (await ExistsAsync(name, cancellationToken).ConfigureAwait(false))
            {
                return;
            }

            Log.MaxDeliveriesStreamRemade(Logger, name, queue);
            ForgetStreamOf(subject);
        }

        var stream = new NatsStreamOptions { Name = name, Retention = NatsRetention.WorkQueue, Storage = NatsStorage.File, Replicas = _options.QueueStream.Replicas };
        stream.Subjects.Add(subject);
        await EnsureStreamAsync(stream, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Moves the message of every kept max-deliveries advisory of the queue to <paramref name="moveAsync"/>, oldest first,
    /// removing the advisory (double ack) only after that returned, and the message from a work-queue stream (where it
    /// would stay, never delivered again). A message no longer in its stream is skipped.
    /// </summary>
    private async ValueTask<int> DrainMaxDeliveriesAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        INatsJSConsumer consumer;
        try
        {
            // No stream: the queue's consumer has no limit, or was never consumed by this version; the drain makes none.
            await JetStream.GetStreamAsync(Names.MaxDeliveriesStream(queue), cancellationToken: cancellationToken).ConfigureAwait(false);
            consumer = await JetStream.CreateOrUpdateConsumerAsync(Names.MaxDeliveriesStream(queue), new ConsumerConfig(NatsNames.MaxDeliveriesDurable)
            {
                AckPolicy = ConsumerConfigAckPolicy.Explicit,
                AckWait = _options.AckWait,
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.StreamNotFound)
        {
            return 0;
        }

        var moved = 0;
        var held = new HeldDeadLetters();
        try
        {
            while (true)
            {
                var fetched = 0;
                await foreach (var advisory in consumer.FetchNoWaitAsync<byte[]>(new NatsJSFetchOpts { MaxMsgs = 100 }, cancellationToken: cancellationToken).ConfigureAwait(false))
                {
                    fetched++;
                    if (MaxDeliveriesAdvisory.Read(advisory.Data, out var failure) is not { } read)
                    {
                        Log.MaxDeliveriesAdvisoryUnreadable(Logger, queue, failure!);
                    }
                    else if (await ReadMaxDeliveredAsync(queue, read, cancellationToken).ConfigureAwait(false) is { } deadLetter)
                    {
                        // Refused, the advisory is held (and its message kept) while the drain goes on with the others.
                        if (!await held.TryMoveAsync(advisory, deadLetter, moveAsync, cancellationToken).ConfigureAwait(false))
                        {
                            continue;
                        }

                        await RemoveMaxDeliveredAsync(read, cancellationToken).ConfigureAwait(false);
                        moved++;
                    }

                    await advisory.AckAsync(new AckOpts { DoubleAck = true }, cancellationToken).ConfigureAwait(false);
                }

                if (fetched == 0)
                {
                    held.ThrowIfRefused();
                    return moved;
                }
            }
        }
        finally
        {
            await held.NakAsync().ConfigureAwait(false);
        }
    }

    /// <summary>The message an advisory names, read back from its stream, as a native dead letter; null when it is gone.</summary>
    private async ValueTask<NativeDeadLetter?> ReadMaxDeliveredAsync(string queue, MaxDeliveriesAdvisory advisory, CancellationToken cancellationToken)
    {
        StoredMessage stored;
        try
        {
            var stream = await JetStream.GetStreamAsync(advisory.Stream, cancellationToken: cancellationToken).ConfigureAwait(false);
            stored = (await stream.GetAsync(new StreamMsgGetRequest { Seq = advisory.StreamSequence }, cancellationToken).ConfigureAwait(false)).Message;
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode is MessageNotFound or NatsTopology.StreamNotFound)
        {
            Log.MaxDeliveredMessageGone(Logger, advisory.StreamSequence, advisory.Stream, queue);
            return null;
        }

        var rawType = _options.RawQueues.TryGetValue(queue, out var raw) ? raw : null;
        var headers = StoredHeaders(stored.Hdrs);
        var body = stored.Data.ToArray();
        var envelope = NatsEnvelopeCodec.Decode(headers, body, (int)Math.Min((long)(advisory.Deliveries ?? 1) + NatsEnvelopeCodec.AttemptsBefore(headers), int.MaxValue), stored.Time, rawType, _options.Source, TimeProvider, out var decodeFailure);

        // One id per stored message, so a drain stopped between the store write and the ack stores it once when run again.
        var id = CloudEventValues.ForeignMessageId(string.Create(CultureInfo.InvariantCulture, $"max-deliveries/{advisory.Stream}/{advisory.StreamSequence}"), TimeProvider);
        var withId = new Dictionary<string, string>(envelope.Headers, StringComparer.Ordinal) { [HeaderNames.DeadLetterId] = id.ToString("D") };
        // The server sends the advisory once the durable's own MaxDeliver is used up, with that many deliveries: its limit,
        // whoever made the durable, not this process's option.
        var delivered = advisory.Deliveries is { } limit
            ? string.Create(CultureInfo.InvariantCulture, $"Delivered {limit} times, the most the consumer allows (MaxDeliver {limit})")
            : "Delivered as often as the consumer allows";
        return new NativeDeadLetter
        {
            Envelope = envelope with { Headers = withId },
            Queue = queue,
            Reason = delivered + ", without being settled on the last (its process stopped, or the ack wait ran out).",
            Time = advisory.Time ?? TimeProvider.GetUtcNow(),
            DecodeFailure = decodeFailure,
        };
    }

    /// <summary>Removes a dead-lettered message from a work-queue stream, where nothing else would; a limits or interest stream keeps it for whoever else reads it.</summary>
    private async ValueTask RemoveMaxDeliveredAsync(MaxDeliveriesAdvisory advisory, CancellationToken cancellationToken)
    {
        try
        {
            var stream = await JetStream.GetStreamAsync(advisory.Stream, cancellationToken: cancellationToken).ConfigureAwait(false);
            if (stream.Info.Config.Retention == StreamConfigRetention.Workqueue)
            {
                await stream.DeleteMessageAsync(new StreamMsgDeleteRequest { Seq = advisory.StreamSequence, NoErase = true }, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode is MessageNotFound or NatsTopology.StreamNotFound)
        {
        }
#pragma warning disable CA1031 // The dead letter is stored; a message left behind is logged, not a reason to store it again.
        catch (Exception e) when (e is NatsException or NatsJSException)
#pragma warning restore CA1031
        {
            Log.MaxDeliveredRemoveFailed(Logger, e, advisory.StreamSequence, advisory.Stream);
        }
    }

    /// <summary>Reads a stored message's header block (base64 of <c>NATS/1.0\r\nName: value\r\n...</c>); null when it has none.</summary>
    internal static NatsHeaders? StoredHeaders(string? base64)
    {
        if (string.IsNullOrEmpty(base64))
        {
            return null;
        }

        var text = Encoding.UTF8.GetString(Convert.FromBase64String(base64));
        var headers = new NatsHeaders();
        var lines = text.Split("\r\n");

        // The first line is the version (and a status, if any); a header line is "Name: value".
        for (var i = 1; i < lines.Length; i++)
        {
            var colon = lines[i].IndexOf(':', StringComparison.Ordinal);
            if (colon <= 0)
            {
                continue;
            }

            var name = lines[i][..colon];
            var value = lines[i][(colon + 1)..].TrimStart(' ', '\t');
            headers[name] = headers.TryGetValue(name, out var existing) ? Microsoft.Extensions.Primitives.StringValues.Concat(existing, value) : value;
        }

        return headers;
    }
}

/// <summary>
/// What Herald reads of a JetStream max-deliveries advisory (<c>io.nats.jetstream.advisory.v1.max_deliver</c>);
/// <see cref="Deliveries"/> is the durable's MaxDeliver as the server has it, null when the advisory does not say.
/// </summary>
internal sealed record MaxDeliveriesAdvisory(string Stream, string Consumer, ulong StreamSequence, int? Deliveries, DateTimeOffset? Time)
{
    /// <summary>The advisory, or null with the reason when it is not one Herald can act on.</summary>
    public static MaxDeliveriesAdvisory? Read(byte[]? json, out string? failure)
    {
        failure = null;
        try
        {
            using var document = JsonDocument.Parse(json ?? []);
            var root = document.RootElement;
            if (root.TryGetProperty("stream", out var stream) && stream.GetString() is { Length: > 0 } streamName
                && root.TryGetProperty("consumer", out var consumer) && consumer.GetString() is { Length: > 0 } consumerName
                && root.TryGetProperty("stream_seq", out var sequence) && sequence.TryGetUInt64(out var streamSequence) && streamSequence > 0)
            {
                var deliveries = root.TryGetProperty("deliveries", out var d) && d.TryGetInt32(out var n) && n > 0 ? n : (int?)null;
                DateTimeOffset? time = root.TryGetProperty("timestamp", out var t) && t.TryGetDateTimeOffset(out var at) ? at : null;
                return new MaxDeliveriesAdvisory(streamName, consumerName, streamSequence, deliveries, time);
            }

            failure = "it names no stream, consumer and stream sequence.";
        }
        catch (JsonException e)
        {
            failure = "it is not JSON: " + e.Message;
        }
        catch (InvalidOperationException e)
        {
            failure = "a field has the wrong kind of value: " + e.Message;
        }

        return null;
    }
}
