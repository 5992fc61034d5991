using System.Text;
using Herald.Messages;
using Herald.Transport;
using Xunit;

namespace Herald.Conformance.Transport;

/// <summary>Records what a test's handlers received, so the test can await deliveries with a deadline and fail listing what arrived.</summary>
public sealed class DeliveryCollector
{
    private const int MaxListed = 40;
    private readonly Lock _gate = new();
    private readonly List<CollectedDelivery> _items = [];
    private readonly TimeProvider _clock;
    private TaskCompletionSource _changed = NewSignal();

    /// <summary>Creates a collector that stamps each delivery with the time on <paramref name="clock"/> (the system clock by default).</summary>
    public DeliveryCollector(TimeProvider? clock = null) => _clock = clock ?? TimeProvider.System;

    /// <summary>How many deliveries were recorded.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _items.Count;
            }
        }
    }

    /// <summary>A copy of the recorded deliveries, in arrival order.</summary>
    public IReadOnlyList<CollectedDelivery> Items
    {
        get
        {
            lock (_gate)
            {
                return [.. _items];
            }
        }
    }

    /// <summary>Records a delivery as seen by the named consumer.</summary>
    public CollectedDelivery Add(Delivery delivery, string consumer = "")
    {
        ArgumentNullException.ThrowIfNull(delivery);
        return Add(delivery.Envelope, delivery.Queue, consumer);
    }

    /// <summary>Records an envelope as delivered from the queue to the named consumer.</summary>
    public CollectedDelivery Add(Envelope envelope, string queue, string consumer = "")
    {
        ArgumentNullException.ThrowIfNull(envelope);
        TaskCompletionSource changed;
        CollectedDelivery item;
        lock (_gate)
        {
            item = new CollectedDelivery(envelope, queue, consumer, _clock.GetUtcNow(), _items.Count);
            _items.Add(item);
            changed = _changed;
            _changed = NewSignal();
        }

        changed.TrySetResult();
        return item;
    }

    /// <summary>How many times the message was recorded.</summary>
    public int CountOf(Guid messageId)
    {
        lock (_gate)
        {
            return _items.Count(d => d.Envelope.MessageId == messageId);
        }
    }

    /// <summary>Waits until at least <paramref name="count"/> deliveries were recorded; fails listing what arrived.</summary>
    public Task<IReadOnlyList<CollectedDelivery>> WaitForCountAsync(int count, TimeSpan timeout, string? what = null) =>
        WaitUntilAsync(items => items.Count >= count, timeout, what ?? $"{count} deliveries");

    /// <summary>Waits until every one of the messages was recorded at least once; fails naming the missing ones.</summary>
    public Task<IReadOnlyList<CollectedDelivery>> WaitForMessagesAsync(IReadOnlyCollection<Guid> messageIds, TimeSpan timeout, string what)
    {
        ArgumentNullException.ThrowIfNull(messageIds);
        return WaitUntilAsync(items => Missing(items, messageIds) == 0, timeout, $"{what} ({messageIds.Count} messages)");
    }

    /// <summary>Waits until the condition holds over the recorded deliveries; fails with <paramref name="what"/> and the list.</summary>
    public async Task<IReadOnlyList<CollectedDelivery>> WaitUntilAsync(Func<IReadOnlyList<CollectedDelivery>, bool> condition, TimeSpan timeout, string what)
    {
        ArgumentNullException.ThrowIfNull(condition);
        var started = TimeProvider.System.GetTimestamp();
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (condition(_items))
                {
                    return [.. _items];
                }

                changed = _changed.Task;
            }

            var remaining = timeout - TimeProvider.System.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero)
            {
                Assert.Fail($"Timed out after {timeout.TotalSeconds:0.###} s waiting for {what}. {Describe()}");
            }

            try
            {
                await changed.WaitAsync(remaining);
            }
            catch (TimeoutException)
            {
                // Checked once more at the top of the loop, then reported.
            }
        }
    }

    /// <summary>
    /// Asserts that no more than <paramref name="count"/> deliveries are recorded within the window: a short,
    /// deadline-bounded wait for something that must not happen (a duplicate, an early delivery).
    /// </summary>
    public async Task AssertNoMoreThanAsync(int count, TimeSpan window, string what)
    {
        var started = TimeProvider.System.GetTimestamp();
        while (true)
        {
            Task changed;
            lock (_gate)
            {
                if (_items.Count > count)
                {
                    break;
                }

                changed = _changed.Task;
            }

            var remaining = window - TimeProvider.System.GetElapsedTime(started);
            if (remaining <= TimeSpan.Zero)
            {
                return;
            }

            try
            {
                await changed.WaitAsync(remaining);
            }
            catch (TimeoutException)
            {
                return;
            }
        }

        Assert.Fail($"Expected at most {count} deliveries but more arrived: {what}. {Describe()}");
    }

    /// <summary>Describes what arrived, for failure messages.</summary>
    public string Describe()
    {
        var items = Items;
        var text = new StringBuilder().Append(items.Count).Append(" deliveries arrived");
        if (items.Count == 0)
        {
            return text.Append('.').ToString();
        }

        text.Append(':');
        foreach (var item in items.Take(MaxListed))
        {
            text.AppendLine().Append("  ").Append(item);
        }

        if (items.Count > MaxListed)
        {
            text.AppendLine().Append("  ... and ").Append(items.Count - MaxListed).Append(" more");
        }

        return text.ToString();
    }

    private static int Missing(IReadOnlyList<CollectedDelivery> items, IReadOnlyCollection<Guid> ids)
    {
        var seen = new HashSet<Guid>(items.Select(d => d.Envelope.MessageId));
        return ids.Count(id => !seen.Contains(id));
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
