using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Herald.Persistence;

namespace Herald.Streams;

/// <summary>
/// Stream state in process memory: changes apply when their unit of work commits. It survives a processor restart in the
/// same process, not a process restart; with the in-memory event store that is the same lifetime as the source.
/// </summary>
public sealed class InMemoryStreamStateStore : IStreamStateStore
{
    private readonly ConcurrentDictionary<string, ConcurrentDictionary<(string Store, string Key), string>> _processors = new(StringComparer.Ordinal);

    /// <inheritdoc/>
    public async IAsyncEnumerable<StateEntry> ReadAllAsync(string processor, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(processor);
        await Task.CompletedTask.ConfigureAwait(false);
        if (!_processors.TryGetValue(processor, out var entries))
        {
            yield break;
        }

        foreach (var ((store, key), value) in entries)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return new StateEntry(store, key, value);
        }
    }

    /// <inheritdoc/>
    public ValueTask WriteAsync(string processor, IReadOnlyList<StateChange> changes, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(processor);
        ArgumentNullException.ThrowIfNull(changes);
        ArgumentNullException.ThrowIfNull(unitOfWork);
        var copy = changes.ToArray();
        unitOfWork.OnCommitted(token =>
        {
            var entries = _processors.GetOrAdd(processor, static _ => new());
            foreach (var change in copy)
            {
                if (change.Value is null)
                {
                    entries.TryRemove((change.Store, change.Key), out _);
                }
                else
                {
                    entries[(change.Store, change.Key)] = change.Value;
                }
            }

            return ValueTask.CompletedTask;
        });
        return ValueTask.CompletedTask;
    }
}
