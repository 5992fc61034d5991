using Herald.Sqlite.EventSourcing;
using Herald.Internal;
using Herald.Messages;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Transport;

/// <summary>
/// The queue's statements, prepared once on the writer's connection and run inside the writer's group transaction
/// (on its one thread, so no locking here). Times are UTC ticks; envelopes map onto columns as everywhere (<see cref="EnvelopeColumns"/>).
/// </summary>
internal sealed class QueueStatements
{
    // The envelope's columns and when it was queued: what a dead letter copies from its message.
    private const string MessageColumns = EnvelopeColumns.Names + ", enqueued_at";

    private readonly RawStatement _insert;
    private readonly RawStatement _bind;
    private readonly RawStatement _boundQueues;
    private readonly RawStatement _candidates;
    private readonly RawStatement _lease;
    private readonly RawStatement _nextVisible;
    private readonly RawStatement _ack;
    private readonly RawStatement _nack;
    private readonly RawStatement _release;
    private readonly RawStatement _releaseOwner;
    private readonly RawStatement _copyToDeadLetters;
    private readonly RawStatement _deleteDeadLetter;

    public QueueStatements(WriteSession session)
    {
        Session = session;
        _insert = session.Prepare(
            $"INSERT INTO herald_queue_messages (queue, visible_at, attempts, {MessageColumns}) " +
            "VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
        _bind = session.Prepare("INSERT OR IGNORE INTO herald_queue_bindings (topic, queue, bound_at) VALUES (?1, ?2, ?3)");
        _boundQueues = session.Prepare("SELECT queue FROM herald_queue_bindings WHERE topic = ?1 ORDER BY queue");

        // Visible and not leased (or its lease ran out). A keyed message waits while an older one of its key is visible
        // (ready or in flight anywhere), so a key is handled one message at a time, in send order, across every consumer.
        _candidates = session.Prepare(
            $"SELECT id, attempts + (lease_owner IS NOT NULL), {EnvelopeColumns.Names} " +
            "FROM herald_queue_messages AS m " +
            "WHERE queue = ?1 AND visible_at <= ?2 AND (lease_until IS NULL OR lease_until <= ?2) " +
            "AND (partition_key IS NULL OR NOT EXISTS (SELECT 1 FROM herald_queue_messages AS o " +
            "WHERE o.queue = ?1 AND o.partition_key = m.partition_key AND o.id < m.id AND o.visible_at <= ?2)) " +
            "ORDER BY visible_at, id LIMIT ?3");
        _lease = session.Prepare("UPDATE herald_queue_messages SET lease_owner = ?2, lease_until = ?3, attempts = ?4 WHERE id = ?1");
        _nextVisible = session.Prepare("SELECT MIN(visible_at) FROM herald_queue_messages WHERE queue = ?1 AND visible_at > ?2");
        // Settlements act only under the claim that took the message: its owner and its attempts, which every later claim
        // of the message changes (one by this same owner after the lease ran out too), so a lost claim settles nothing.
        _ack = session.Prepare("DELETE FROM herald_queue_messages WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?3 RETURNING id");
        _nack = session.Prepare(
            "UPDATE herald_queue_messages SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, visible_at = ?3, " +
            "headers = coalesce(?4, headers) WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?5 RETURNING id");
        _release = session.Prepare("UPDATE herald_queue_messages SET lease_owner = NULL, lease_until = NULL WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?3");
        _releaseOwner = session.Prepare("UPDATE herald_queue_messages SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?1");
        _copyToDeadLetters = session.Prepare(
            $"INSERT INTO herald_queue_dead_letters (queue, delivery_attempt, reason, dead_lettered_at, {MessageColumns}) " +
            $"SELECT queue, attempts + 1, ?3, ?4, {MessageColumns.Replace("headers", "coalesce(?6, headers)", StringComparison.Ordinal)} " +
            "FROM herald_queue_messages WHERE id = ?1 AND lease_owner = ?2 AND attempts = ?5 RETURNING id");
        _deleteDeadLetter = session.Prepare("DELETE FROM herald_queue_dead_letters WHERE id = ?1");
    }

    /// <summary>The session these statements belong to (the writer keeps one for its whole life).</summary>
    public WriteSession Session { get; }

    public void Insert(string queue, Envelope envelope, long visibleAt, long now)
    {
        var insert = _insert;
        insert.Bind(1, queue);
        insert.Bind(2, visibleAt);
        EnvelopeColumns.Bind(insert, 3, envelope);
        insert.Bind(15, now);
        insert.Execute();
    }

    public void Bind(string topic, string queue, long now)
    {
        _bind.Bind(1, topic);
        _bind.Bind(2, queue);
        _bind.Bind(3, now);
        _bind.Execute();
    }

    public List<string> BoundQueues(string topic)
    {
        var queues = new List<string>();
        _boundQueues.Bind(1, topic);
        while (_boundQueues.Step())
        {
            queues.Add(_boundQueues.Text(0));
        }

        return queues;
    }

    /// <summary>
    /// Leases up to <paramref name="max"/> claimable messages to <paramref name="owner"/> until <paramref name="leaseUntil"/>.
    /// A row whose envelope does not decode is claimed too, as a message the pipeline dead-letters.
    /// </summary>
    public LeasedClaim<QueuedMessage> Claim(string queue, string owner, int max, long now, long leaseUntil)
    {
        var claimed = new List<(QueuedMessage Message, long Attempts)>();
        var select = _candidates;
        select.Bind(1, queue);
        select.Bind(2, now);
        select.Bind(3, max);

        // Read every row first: updating the table while stepping over it could visit a row twice.
        while (select.Step())
        {
            var attempts = select.Int64(1);
            claimed.Add((Read(select, select.Int64(0), (int)Math.Min(int.MaxValue, attempts + 1), now), attempts));
        }

        var messages = new List<QueuedMessage>(claimed.Count);
        foreach (var (message, attempts) in claimed)
        {
            _lease.Bind(1, message.Id);
            _lease.Bind(2, owner);
            _lease.Bind(3, leaseUntil);
            _lease.Bind(4, attempts);
            _lease.Execute();
            messages.Add(message);
        }

        DateTimeOffset? next = null;
        if (messages.Count < max)
        {
            _nextVisible.Bind(1, queue);
            _nextVisible.Bind(2, now);
            if (_nextVisible.Step() && !_nextVisible.IsNull(0))
            {
                next = new DateTimeOffset(_nextVisible.Int64(0), TimeSpan.Zero);
            }

            _nextVisible.Reset();
        }

        return new LeasedClaim<QueuedMessage>(messages, new DateTimeOffset(leaseUntil, TimeSpan.Zero), next);
    }

    /// <summary>Deletes the message if this owner's claim still holds it; false when the claim was lost.</summary>
    public bool Ack(QueuedMessage message, string owner)
    {
        _ack.Bind(1, message.Id);
        _ack.Bind(2, owner);
        _ack.Bind(3, message.Attempts);
        return _ack.ExecuteInt64() is not null;
    }

    /// <summary>Hands the message back for another delivery at <paramref name="visibleAt"/>, its headers replaced when <paramref name="headersJson"/> is set.</summary>
    public bool Nack(QueuedMessage message, string owner, long visibleAt, string? headersJson = null)
    {
        _nack.Bind(1, message.Id);
        _nack.Bind(2, owner);
        _nack.Bind(3, visibleAt);
        _nack.Bind(4, headersJson);
        _nack.Bind(5, message.Attempts);
        return _nack.ExecuteInt64() is not null;
    }

    public bool DeadLetter(QueuedMessage message, string owner, string reason, long now, string? headersJson = null)
    {
        _copyToDeadLetters.Bind(1, message.Id);
        _copyToDeadLetters.Bind(2, owner);
        _copyToDeadLetters.Bind(3, reason);
        _copyToDeadLetters.Bind(4, now);
        _copyToDeadLetters.Bind(5, message.Attempts);
        _copyToDeadLetters.Bind(6, headersJson);
        return _copyToDeadLetters.ExecuteInt64() is not null && Ack(message, owner);
    }

    /// <summary>Deletes a dead letter once the drain moved it to the dead-letter store; true when it was still there.</summary>
    public bool DeleteDeadLetter(long id)
    {
        _deleteDeadLetter.Bind(1, id);
        _deleteDeadLetter.Execute();
        return _deleteDeadLetter.Changes > 0;
    }

    /// <summary>Hands a message back unchanged (not counted as a delivery).</summary>
    public void Release(QueuedMessage message, string owner)
    {
        _release.Bind(1, message.Id);
        _release.Bind(2, owner);
        _release.Bind(3, message.Attempts);
        _release.Execute();
    }

    /// <summary>Hands back every message the owner still holds.</summary>
    public void ReleaseAll(string owner)
    {
        _releaseOwner.Bind(1, owner);
        _releaseOwner.Execute();
    }

    /// <summary>
    /// Extends, in one statement, the lease of the rows <paramref name="ids"/> that the owner holds, on
    /// <paramref name="connection"/> (a write at once, outside the writer's group), and returns the claims it holds: each
    /// row's id and attempts. Only those rows: a message whose settlement gave up is the owner's row still, and must come back
    /// when its lease runs out rather than be renewed for as long as the consumer has other work.
    /// </summary>
    public static HashSet<(long Id, long Attempts)> Renew(SqliteConnection connection, string owner, long leaseUntil, IEnumerable<long> ids)
    {
        using var renew = new RawStatement(
            connection,
            "UPDATE herald_queue_messages SET lease_until = ?2 WHERE id IN (SELECT value FROM json_each(?3)) AND lease_owner = ?1 RETURNING id, attempts");
        renew.Bind(1, owner);
        renew.Bind(2, leaseUntil);
        renew.Bind(3, "[" + string.Join(',', ids.Select(id => id.ToString(System.Globalization.CultureInfo.InvariantCulture))) + "]");
        var held = new HashSet<(long, long)>();
        while (renew.Step())
        {
            held.Add((renew.Int64(0), renew.Int64(1)));
        }

        return held;
    }

    /// <summary>
    /// The candidate row (its envelope from column 2) as a message; a row whose envelope does not decode becomes one the
    /// pipeline dead-letters. Never throws (fuzzed over generated rows in the tests).
    /// </summary>
    internal static QueuedMessage Read<TRow>(TRow row, long id, int deliveryAttempt, long now)
        where TRow : IColumnReader
    {
        const int First = 2;
        return QueuedRows.Read(
            row,
            id,
            deliveryAttempt,
            (Attempt: deliveryAttempt, Now: now),
            static (r, attempt) => EnvelopeColumns.Read(r, First, attempt),
            static (r, state) => EnvelopeColumns.Salvaged(r, First, state.Attempt, new DateTimeOffset(state.Now, TimeSpan.Zero)));
    }
}
