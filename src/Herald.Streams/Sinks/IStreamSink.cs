using Herald.Persistence;
using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>
/// Where a stream's records end up. The processor hands a sink the records of one commit, inside the unit of work that
/// also stores the state and the source checkpoint: a sink that writes through that unit of work (the event store, a
/// read-model table, the outbox) is exactly once with them; any other sink is at least once.
/// </summary>
/// <typeparam name="TKey">The records' key.</typeparam>
/// <typeparam name="TValue">The records' value.</typeparam>
public interface IStreamSink<TKey, TValue>
{
    /// <summary>Writes the records of one commit, in the order they were produced.</summary>
    ValueTask WriteAsync(IReadOnlyList<StreamOutput<TKey, TValue>> outputs, StreamSinkContext context, CancellationToken cancellationToken = default);
}

/// <summary>One record a stream produced: its key, its value and its event time.</summary>
/// <typeparam name="TKey">The key.</typeparam>
/// <typeparam name="TValue">The value.</typeparam>
/// <param name="Key">The key.</param>
/// <param name="Value">The value.</param>
/// <param name="EventTime">The event time.</param>
public readonly record struct StreamOutput<TKey, TValue>(TKey Key, TValue Value, DateTimeOffset EventTime);

/// <summary>What a sink writes with: the services of the commit's scope and its unit of work.</summary>
/// <param name="Processor">The name of the stream processor.</param>
/// <param name="Services">The services of the commit's DI scope.</param>
/// <param name="UnitOfWork">The unit of work that commits the state and the source checkpoint.</param>
public sealed record StreamSinkContext(string Processor, IServiceProvider Services, IUnitOfWork UnitOfWork);

/// <summary>The untyped face of a sink, as the processor calls it.</summary>
internal interface IStreamSinkWriter
{
    ValueTask WriteAsync(IReadOnlyList<StreamRecord> records, StreamSinkContext context, CancellationToken cancellationToken);
}

internal sealed class SinkWriter<TKey, TValue>(IStreamSink<TKey, TValue> sink) : IStreamSinkWriter
{
    public ValueTask WriteAsync(IReadOnlyList<StreamRecord> records, StreamSinkContext context, CancellationToken cancellationToken)
    {
        var outputs = new StreamOutput<TKey, TValue>[records.Count];
        for (var i = 0; i < outputs.Length; i++)
        {
            var record = records[i];
            outputs[i] = new StreamOutput<TKey, TValue>((TKey)record.Key!, (TValue)record.Value!, new DateTimeOffset(record.Time, TimeSpan.Zero));
        }

        return sink.WriteAsync(outputs, context, cancellationToken);
    }
}
