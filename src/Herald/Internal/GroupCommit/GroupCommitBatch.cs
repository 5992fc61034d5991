using System.Threading.Channels;

namespace Herald.Internal;

/// <summary>
/// The group a <see cref="IGroupCommitWriter{TItem}"/> commits: the items taken from the queue, in queue order. One batch
/// serves one loop for its whole life, so taking a group allocates nothing. An extension point for adapter packages, not
/// for application code.
/// </summary>
/// <typeparam name="TItem">The queued work.</typeparam>
public sealed class GroupCommitBatch<TItem>
    where TItem : class, IGroupCommitItem
{
    private readonly ChannelReader<TItem> _queue;
    private readonly List<TItem> _items;
    private readonly int _maxItems;
    private readonly long _maxWeight;
    private readonly long _maxBytes;

    internal GroupCommitBatch(ChannelReader<TItem> queue, GroupCommitOptions options)
    {
        _queue = queue;
        _maxItems = options.MaxItems;
        _maxWeight = options.MaxWeight;
        _maxBytes = options.MaxBytes;
        _items = new List<TItem>(_maxItems);
    }

    /// <summary>The group at hand.</summary>
    public IReadOnlyList<TItem> Items => _items;

    /// <summary>
    /// Replaces <see cref="Items"/> with what is queued now (up to the limits, never waiting for more); false when nothing
    /// is. An item whose caller cancelled while it waited is completed as cancelled and left out.
    /// </summary>
    public bool TryTakeNext()
    {
        _items.Clear();
        long weight = 0, bytes = 0;
        while (_items.Count < _maxItems && _queue.TryPeek(out var next)
               && (_items.Count == 0 || (weight + next.Weight <= _maxWeight && bytes + next.Bytes <= _maxBytes)) && _queue.TryRead(out next))
        {
            if (next.CancellationToken.IsCancellationRequested)
            {
                next.Cancel();
                continue;
            }

            _items.Add(next);
            weight += next.Weight;
            bytes += next.Bytes;
        }

        return _items.Count > 0;
    }

    internal void Fail(Exception exception)
    {
        foreach (var item in _items)
        {
            item.Fail(exception);
        }
    }
}
