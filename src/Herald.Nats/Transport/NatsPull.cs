using Microsoft.Extensions.Logging;
using NATS.Client.JetStream;

namespace Herald.Nats.Transport;

/// <summary>The pull loop of a durable consumer, shared by a queue's consumer and its delay mover.</summary>
internal static class NatsPull
{
    /// <summary>
    /// Pulls up to <paramref name="maxMessages"/> at a time and hands each message to <paramref name="receive"/> until
    /// <paramref name="stop"/> fires. A failed pull (consumer deleted, server gone) goes to <paramref name="failed"/> and is
    /// started again a second later: the loop never dies. When the server says the durable consumer or its stream is
    /// gone (deleted behind Herald's back), <paramref name="remake"/> makes them again and the pull goes on with the
    /// consumer it returns. A durable deleted while the connection was down (or lost by a server that came back without it)
    /// fails no pull: the client only misses the heartbeats of its pulls, so each miss asks the server whether the durable
    /// is still there. Drain on cancel: a stopped pull still hands over what the server already sent, so it is nakked,
    /// not left to time out. Returns null once stopped; or, ending the pull, the server's refusal to make the durable again
    /// (<see cref="IsRefused"/>: an operator's stream is gone, a limit is reached) or a durable that refuses every pull
    /// (<see cref="RefusesPulls"/>: made again as a push consumer), which asking again would not change.
    /// </summary>
    public static async Task<Exception?> RunAsync(
        INatsJSConsumer consumer,
        int maxMessages,
        Func<INatsJSMsg<byte[]>, CancellationToken, ValueTask> receive,
        Action<Exception> failed,
        Func<CancellationToken, Task<INatsJSConsumer>> remake,
        TimeProvider time,
        CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            // Cancelled, apart from a stop, only when a missed heartbeat found the durable gone.
            using var lost = CancellationTokenSource.CreateLinkedTokenSource(stop);
            var pulled = consumer;
            var options = new NatsJSConsumeOpts
            {
                MaxMsgs = maxMessages,
                Expires = TimeSpan.FromSeconds(5),
                DrainOnCancel = true,
                NotificationHandler = (notification, _) => notification is NatsJSTimeoutNotification ? CancelIfGoneAsync(pulled, lost, stop) : Task.CompletedTask,
            };
            try
            {
                await foreach (var message in consumer.ConsumeAsync<byte[]>(opts: options, cancellationToken: lost.Token).ConfigureAwait(false))
                {
                    await receive(message, stop).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (lost.IsCancellationRequested)
            {
            }
#pragma warning disable CA1031 // Reported and started again; the loop must not die.
            catch (Exception e)
#pragma warning restore CA1031
            {
                // Pulling again gets the same answer: the pull ends, and the consumer reports why.
                if (RefusesPulls(e))
                {
                    return e;
                }

                failed(e);
                try
                {
                    // The server answers a waiting pull "409 Consumer Deleted" while it still deletes (a stream: its directory
                    // is removed after); made again at once, NATS 2.9.10 puts the new stream in the directory that delete then
                    // removes, and the stream counts every message sent after and delivers none. Made again a second later.
                    if (IsConsumerDeleted(e))
                    {
                        await Task.Delay(TimeSpan.FromSeconds(1), time, stop).ConfigureAwait(false);
                    }

                    // Pulling again from a consumer that no longer exists would fail forever.
                    if (await IsGoneAsync(consumer, stop).ConfigureAwait(false))
                    {
                        consumer = await remake(stop).ConfigureAwait(false);
                        continue;
                    }
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception remakeFailure) when (IsRefused(remakeFailure))
                {
                    return remakeFailure;
                }
#pragma warning disable CA1031 // Reported; tried again after the next failed pull.
                catch (Exception remakeFailure)
#pragma warning restore CA1031
                {
                    failed(remakeFailure);
                }

                await PauseAsync(time, stop).ConfigureAwait(false);
                continue;
            }

            if (lost.IsCancellationRequested && !stop.IsCancellationRequested)
            {
                try
                {
                    consumer = await remake(stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stop.IsCancellationRequested)
                {
                    break;
                }
                catch (Exception remakeFailure) when (IsRefused(remakeFailure))
                {
                    return remakeFailure;
                }
#pragma warning disable CA1031 // Reported; the next missed heartbeat finds it gone again.
                catch (Exception remakeFailure)
#pragma warning restore CA1031
                {
                    failed(remakeFailure);
                    await PauseAsync(time, stop).ConfigureAwait(false);
                }
            }
        }

        return null;
    }

    /// <summary>
    /// Whether the server answered, and refused (a 4xx API error, here or as the cause of a <see cref="HeraldException"/>):
    /// not a lost connection or a JetStream that is briefly unavailable (503), which are tried again.
    /// </summary>
    internal static bool IsRefused(Exception failure)
    {
        for (var e = failure; e is not null; e = e.InnerException)
        {
            if (e is NatsJSApiException { Error.Code: >= 400 and < 500 })
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Whether the server refused the pull itself in a way pulling again cannot change: the durable is a push consumer (made
    /// again so by an operator), and every pull gets "409 Consumer is push based".
    /// </summary>
    internal static bool RefusesPulls(Exception failure)
    {
        for (var e = failure; e is not null; e = e.InnerException)
        {
            if (Is409(e, PushBased))
            {
                return true;
            }

            if (e is NatsJSException && e.Message.Contains(PushBased, StringComparison.OrdinalIgnoreCase))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Logs, and returns as the reason a consumer reports, a pull ended by the server: its refusal to make the durable
    /// again, or a durable that refuses every pull (<see cref="RefusesPulls"/>).
    /// </summary>
    internal static HeraldException Ended(ILogger logger, Exception refused, string durable, string stream, string queue)
    {
        if (RefusesPulls(refused))
        {
            Log.DurableRefusesPulls(logger, refused, durable, stream, queue);
            return new HeraldException($"The durable consumer '{durable}' of stream '{stream}' ('{queue}') is a push consumer on the server (made again so behind Herald's back), and refuses every pull: {refused.Message}. Delete it; Herald makes it again as a pull consumer when the endpoint starts.", refused);
        }

        Log.DurableNotRemade(logger, refused, durable, stream, queue);
        return new HeraldException($"The durable consumer '{durable}' of stream '{stream}' ('{queue}') is gone and the server refused to make it again: {refused.Message}", refused);
    }

    // The description of the 409 status the server answers a pull on a push consumer with.
    private const string PushBased = "Consumer is push based";

    // The description of the 409 status the server answers a waiting pull with when its durable, or the stream, is deleted.
    private const string Deleted = "Consumer Deleted";

    private static bool IsConsumerDeleted(Exception failure)
    {
        for (var e = failure; e is not null; e = e.InnerException)
        {
            if (Is409(e, Deleted))
            {
                return true;
            }
        }

        return false;
    }

    // Whether the server answered the pull with a 409 status of that description.
    private static bool Is409(Exception failure, string description) =>
        failure is NatsJSProtocolException { HeaderCode: 409, HeaderMessageText: { } text } && text.Contains(description, StringComparison.OrdinalIgnoreCase);

    private static async Task PauseAsync(TimeProvider time, CancellationToken stop)
    {
        try
        {
            await Task.Delay(TimeSpan.FromSeconds(1), time, stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Cancels <paramref name="lost"/> when the server says the durable consumer is gone; never throws.</summary>
    private static async Task CancelIfGoneAsync(INatsJSConsumer consumer, CancellationTokenSource lost, CancellationToken stop)
    {
        try
        {
            if (await IsGoneAsync(consumer, stop).ConfigureAwait(false))
            {
                await lost.CancelAsync().ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (ObjectDisposedException)
        {
            // The pull it watched ended meanwhile.
        }
    }

    /// <summary>Whether the server says the durable consumer, or its stream, no longer exists (not merely unreachable).</summary>
    private static async Task<bool> IsGoneAsync(INatsJSConsumer consumer, CancellationToken stop)
    {
        try
        {
            await consumer.RefreshAsync(stop).ConfigureAwait(false);
            return false;
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode is NatsTopology.ConsumerNotFound or NatsTopology.StreamNotFound)
        {
            return true;
        }
#pragma warning disable CA1031 // Unreachable, or any other answer: the pull is tried again as it is.
        catch (Exception e) when (e is not OperationCanceledException || !stop.IsCancellationRequested)
#pragma warning restore CA1031
        {
            return false;
        }
    }
}
