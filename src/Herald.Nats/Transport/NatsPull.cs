using NATS.Client.JetStream;

namespace Herald.Nats.Transport;

/// <summary>The pull loop of a durable consumer, shared by a queue's consumer and its delay mover.</summary>
internal static class NatsPull
{
    /// <summary>
    /// Pulls up to <paramref name="maxMessages"/> at a time and hands each message to <paramref name="receive"/> until
    /// <paramref name="stop"/> fires. A failed pull (consumer deleted, server gone) goes to <paramref name="failed"/> and is
    /// started again a second later: the loop never dies. Drain on cancel: a stopped pull still hands over what the server
    /// already sent, so it is nakked, not left to time out.
    /// </summary>
    public static async Task RunAsync(
        INatsJSConsumer consumer,
        int maxMessages,
        Func<INatsJSMsg<byte[]>, CancellationToken, ValueTask> receive,
        Action<Exception> failed,
        TimeProvider time,
        CancellationToken stop)
    {
        var options = new NatsJSConsumeOpts { MaxMsgs = maxMessages, Expires = TimeSpan.FromSeconds(5), DrainOnCancel = true };
        while (!stop.IsCancellationRequested)
        {
            try
            {
                await foreach (var message in consumer.ConsumeAsync<byte[]>(opts: options, cancellationToken: stop).ConfigureAwait(false))
                {
                    await receive(message, stop).ConfigureAwait(false);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
#pragma warning disable CA1031 // Reported and started again; the loop must not die.
            catch (Exception e)
#pragma warning restore CA1031
            {
                failed(e);
                try
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), time, stop).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }
        }
    }
}
