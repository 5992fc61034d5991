using Herald.EventSourcing;
using Herald.Handling;
using Herald.Internal;
using Herald.Messages;
using Herald.Projections;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams;

/// <summary>The sinks Herald brings: a callback, the event store, a read-model table, and the message bus.</summary>
public static class StreamSinks
{
    /// <summary>Calls <paramref name="callback"/> with each record, before the commit (at least once).</summary>
    public static IStreamSink<TKey, TValue> Callback<TKey, TValue>(Action<StreamOutput<TKey, TValue>> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        return new CallbackSink<TKey, TValue>(callback);
    }

    /// <summary>Appends each value as an event to the stream <paramref name="stream"/> names, in the commit's unit of work (exactly once with the state).</summary>
    public static IStreamSink<TKey, TValue> EventStore<TKey, TValue>(Func<TKey, TValue, string> stream)
        where TValue : notnull
    {
        ArgumentNullException.ThrowIfNull(stream);
        return new EventStoreSink<TKey, TValue>(stream);
    }

    /// <summary>Writes each value as the document of <paramref name="table"/> under the id <paramref name="id"/> gives, in the commit's unit of work.</summary>
    public static IStreamSink<TKey, TValue> ReadModel<TKey, TValue>(ReadModelTable<TValue> table, Func<TKey, TValue, string> id)
        where TValue : class
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(id);
        return new ReadModelSink<TKey, TValue>(table, id);
    }

    /// <summary>
    /// Publishes each value: through the outbox of the commit's unit of work when the outbox is on (exactly once with the
    /// state), else straight through the message bus before the commit (at least once).
    /// </summary>
    public static IStreamSink<TKey, TValue> Publish<TKey, TValue>()
        where TValue : notnull => new PublishSink<TKey, TValue>();

    private sealed class CallbackSink<TKey, TValue>(Action<StreamOutput<TKey, TValue>> callback) : IStreamSink<TKey, TValue>
    {
        public ValueTask WriteAsync(IReadOnlyList<StreamOutput<TKey, TValue>> outputs, StreamSinkContext context, CancellationToken cancellationToken = default)
        {
            foreach (var output in outputs)
            {
                callback(output);
            }

            return ValueTask.CompletedTask;
        }
    }

    private sealed class EventStoreSink<TKey, TValue>(Func<TKey, TValue, string> stream) : IStreamSink<TKey, TValue>
        where TValue : notnull
    {
        public async ValueTask WriteAsync(IReadOnlyList<StreamOutput<TKey, TValue>> outputs, StreamSinkContext context, CancellationToken cancellationToken = default)
        {
            var store = context.Services.GetRequiredService<IEventStore>();
            var envelopes = context.Services.GetRequiredService<EnvelopeFactory>();
            foreach (var group in outputs.GroupBy(o => stream(o.Key, o.Value), StringComparer.Ordinal))
            {
                var events = group.Select(o => envelopes.Create(o.Value)).ToArray();
                await store.AppendAsync(group.Key, ExpectedVersion.Any, events, context.UnitOfWork, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private sealed class ReadModelSink<TKey, TValue>(ReadModelTable<TValue> table, Func<TKey, TValue, string> id) : IStreamSink<TKey, TValue>
        where TValue : class
    {
        public async ValueTask WriteAsync(IReadOnlyList<StreamOutput<TKey, TValue>> outputs, StreamSinkContext context, CancellationToken cancellationToken = default)
        {
            var store = context.Services.GetRequiredService<IReadModelStore>();
            var generation = await store.GetActiveGenerationAsync(table.Name, cancellationToken).ConfigureAwait(false);
            foreach (var output in outputs)
            {
                var json = System.Text.Json.JsonSerializer.Serialize(output.Value, table.JsonOptions);
                var documentId = id(output.Key, output.Value);

                // Refused alike on every engine, as a projection's write is (what PostgreSQL cannot store).
                var change = StorableReadModelWrites.Storable("Stream processor", context.Processor, table.Name, documentId, _ => json);
                await store.UpdateAsync(table.Name, generation, documentId, change, context.UnitOfWork, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private sealed class PublishSink<TKey, TValue> : IStreamSink<TKey, TValue>
        where TValue : notnull
    {
        public async ValueTask WriteAsync(IReadOnlyList<StreamOutput<TKey, TValue>> outputs, StreamSinkContext context, CancellationToken cancellationToken = default)
        {
            // The outbox (when on) writes in the commit's unit of work: the events leave only if the state commits.
            var outbox = context.Services.GetService<IOutbox>();
            var bus = outbox is null ? context.Services.GetRequiredService<IMessageBus>() : null;
            foreach (var output in outputs)
            {
                if (outbox is not null)
                {
                    await outbox.PublishAsync(output.Value, cancellationToken: cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    await bus!.PublishAsync(output.Value, cancellationToken: cancellationToken).ConfigureAwait(false);
                }
            }
        }
    }
}
