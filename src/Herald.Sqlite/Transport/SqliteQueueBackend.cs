using Herald.Sqlite.EventSourcing;
using Herald.Internal;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Transport;

/// <summary>
/// One consumer's hold on a queue of the file: claims lease rows to this consumer's owner id, and every settlement is a
/// statement guarded by that owner, written through the file's grouped writer. After a change that can make a message
/// claimable it wakes this process's consumers of the queue (other processes poll).
/// </summary>
internal sealed class SqliteQueueBackend(SqliteQueueTransport transport, string queue) : ILeasedQueueBackend<QueuedMessage>
{
    private readonly string _owner = Guid.CreateVersion7().ToString("N");
    private readonly long _leaseTicks = transport.Options.LeaseDuration.Ticks;

    // A renewal runs every third of the lease and again after a twelfth when it failed: waiting no longer than a sixth for
    // the file's lock leaves it several tries before the lease runs out.
    private readonly TimeSpan _renewalMaxWait = transport.Options.LeaseDuration / 6;

    // True when the last claim took nothing. The consumer claims from one loop, one claim at a time.
    private bool _idle;

    /// <summary>How logs name this consumer.</summary>
    public string Name => $"SQLite queue '{queue}' on '{transport.DataSource}' (owner {_owner})";

    public Task NextWakeUp() => transport.Signals.Next(queue);

    public async ValueTask<LeasedClaim<QueuedMessage>> ClaimAsync(int max, CancellationToken cancellationToken)
    {
        // A claim takes the file's write lock. After a claim that took nothing, the next one reads first, so frequent polls of
        // an idle consumer do not keep other consumers' lease renewals and settlements waiting for that lock (issue 10); a
        // busy consumer claims at once, without the extra read.
        if (_idle)
        {
            var probedAt = transport.Now();
            var (claimable, nextVisible) = await transport.ProbeAsync(queue, probedAt, cancellationToken).ConfigureAwait(false);
            if (!claimable)
            {
                return new LeasedClaim<QueuedMessage>([], new DateTimeOffset(probedAt, TimeSpan.Zero), nextVisible);
            }
        }

        var claim = await transport.WriteAsync(
            q =>
            {
                // The lease is timed when the write runs, so the end it reports is the one written.
                var now = transport.Now();
                return q.Claim(queue, _owner, max, now, now + _leaseTicks);
            },
            cancellationToken).ConfigureAwait(false);
        _idle = claim.Messages.Count == 0;
        return claim;
    }

    public ValueTask<DateTimeOffset> RenewAsync(IReadOnlyCollection<QueuedMessage> held, ICollection<QueuedMessage> lost, CancellationToken cancellationToken)
    {
        // At once and synchronously, on the renewal thread: not queued behind the grouped writes, and with a bounded wait for
        // the lock (issue 10).
        cancellationToken.ThrowIfCancellationRequested();
        var leaseUntil = 0L;
        var holds = transport.WriteAtOnce(
            connection =>
            {
                leaseUntil = transport.Now() + _leaseTicks;
                return QueueStatements.Renew(connection, _owner, leaseUntil, held.Select(m => m.Id));
            },
            _renewalMaxWait);
        foreach (var message in held)
        {
            if (!holds.Contains((message.Id, message.Attempts)))
            {
                lost.Add(message);
            }
        }

        return ValueTask.FromResult(new DateTimeOffset(leaseUntil, TimeSpan.Zero));
    }

    public async ValueTask<bool> AckAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        var acked = await transport.WriteAsync(q => q.Ack(message, _owner), cancellationToken).ConfigureAwait(false);

        // The next message of the key becomes claimable.
        return Changed(acked && message.Envelope.PartitionKey is not null, acked);
    }

    public async ValueTask<bool> NackAsync(QueuedMessage message, TimeSpan delay, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        var visibleAt = SqliteQueueTransport.VisibleAt(transport.Now(), delay);
        var headersJson = headers is null ? null : EventRows.HeadersJson(headers);
        var nacked = await transport.WriteAsync(q => q.Nack(message, _owner, visibleAt, headersJson), cancellationToken).ConfigureAwait(false);
        return Changed(nacked, nacked);
    }

    public async ValueTask<bool> DeadLetterAsync(QueuedMessage message, string reason, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        var headersJson = headers is null ? null : EventRows.HeadersJson(headers);
        var moved = await transport.WriteAsync(q => q.DeadLetter(message, _owner, reason, transport.Now(), headersJson), cancellationToken).ConfigureAwait(false);
        return Changed(moved && message.Envelope.PartitionKey is not null, moved);
    }

    public async ValueTask ReleaseAsync(QueuedMessage message, CancellationToken cancellationToken)
    {
        // A row another consumer took meanwhile is not this owner's and stays untouched.
        await transport.WriteAsync(
            q =>
            {
                q.Release(message, _owner);
                return true;
            },
            cancellationToken).ConfigureAwait(false);
        transport.Signals.Pulse(queue);
    }

    public async ValueTask ReleaseAllAsync(CancellationToken cancellationToken)
    {
        await transport.WriteAsync(
            q =>
            {
                q.ReleaseAll(_owner);
                return true;
            },
            cancellationToken).ConfigureAwait(false);
        transport.Signals.Pulse(queue);
    }

    public async ValueTask<QueueDepth?> CountAsync(CancellationToken cancellationToken) =>
        await transport.CountAsync(queue, transport.Now(), cancellationToken).ConfigureAwait(false);

    private bool Changed(bool claimable, bool held)
    {
        if (claimable)
        {
            transport.Signals.Pulse(queue);
        }

        return held;
    }
}
