namespace Herald.Transport;

/// <summary>A running consumer of one queue.</summary>
public interface ITransportConsumer : IAsyncDisposable
{
    /// <summary>The queue being consumed.</summary>
    string Queue { get; }

    /// <summary>
    /// Stops taking new deliveries, waits for the ones in flight to finish and hands prefetched ones back to the
    /// queue. When <paramref name="cancellationToken"/> fires, in-flight handlers are cancelled and their
    /// unsettled deliveries returned to the queue.
    /// </summary>
    Task StopAsync(CancellationToken cancellationToken = default);
}
