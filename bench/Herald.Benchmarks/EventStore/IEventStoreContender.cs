namespace Herald.Benchmarks.EventStore;

/// <summary>One event store under test: appends to streams, reads one stream and scans the global log.</summary>
internal interface IEventStoreContender : IAsyncDisposable
{
    string Name { get; }

    /// <summary>One line on how the store was configured, for the results file.</summary>
    string Setup { get; }

    Task StartAsync(CancellationToken cancellationToken);

    /// <summary>Appends one event to one of the writer's streams (<paramref name="index"/> picks which).</summary>
    Task AppendOneAsync(int writer, int index, CancellationToken cancellationToken);

    /// <summary>Appends <paramref name="size"/> events in one append to a new stream.</summary>
    Task AppendBatchAsync(int size, CancellationToken cancellationToken);

    /// <summary>Creates the stream <see cref="ReadStreamAsync"/> reads, with <paramref name="events"/> events.</summary>
    Task CreateReadStreamAsync(int events, CancellationToken cancellationToken);

    /// <summary>Reads the whole read stream, materializing every event; returns how many were read.</summary>
    Task<int> ReadStreamAsync(CancellationToken cancellationToken);

    /// <summary>Reads the first <paramref name="maxCount"/> events of the global log; returns how many were read.</summary>
    Task<int> ReadAllAsync(int maxCount, CancellationToken cancellationToken);
}
