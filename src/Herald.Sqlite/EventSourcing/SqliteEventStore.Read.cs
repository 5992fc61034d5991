using System.Buffers;
using System.Text.Json;
using System.Text;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.EventSourcing;

internal sealed partial class SqliteEventStore
{
    // Reads fetch pages and hold no connection (and no WAL snapshot) while the caller consumes them. A page also ends once
    // its bodies reach EventPages.MaxPageBytes, so large events are held a few MiB at a time, not 512 of them.
    private const int PageSize = 512;

    private const string ReadStreamForwardSql =
        "SELECT " + EventRows.Columns + " FROM herald_streams AS s CROSS JOIN herald_events AS e " +
        "WHERE s.name = $p0 AND e.stream_id = s.stream_id AND e.version >= MAX($p1, s.deleted_up_to + 1) ORDER BY e.version LIMIT $p2";

    private const string ReadStreamBackwardSql =
        "SELECT " + EventRows.Columns + " FROM herald_streams AS s CROSS JOIN herald_events AS e " +
        "WHERE s.name = $p0 AND e.stream_id = s.stream_id AND e.version <= $p1 AND e.version > s.deleted_up_to ORDER BY e.version DESC LIMIT $p2";

    // CROSS JOIN keeps the events table as the outer loop, so the log is scanned in position order (or through the
    // category index) and each event looks up its stream by key. Deleted events (up to the stream's deletion point) are skipped.
    private const string ReadAllSql =
        "SELECT " + EventRows.Columns + " FROM herald_events AS e CROSS JOIN herald_streams AS s " +
        "WHERE e.position > $p0 AND s.stream_id = e.stream_id AND e.version > s.deleted_up_to";

    private const string CategoryFilterSql = " AND e.category = $p2";
    private const string TypesFilterSql = " AND e.event_type IN (SELECT value FROM json_each($p3))";
    private const string ReadAllOrderSql = " ORDER BY e.position LIMIT $p1";

    private static readonly string[] ReadAllVariants =
    [
        ReadAllSql + ReadAllOrderSql,
        ReadAllSql + CategoryFilterSql + ReadAllOrderSql,
        ReadAllSql + TypesFilterSql + ReadAllOrderSql,
        ReadAllSql + CategoryFilterSql + TypesFilterSql + ReadAllOrderSql,
    ];

    /// <summary>The statement <see cref="ReadAllAsync"/> runs for a filter of this shape (parameters $p0 after, $p1 limit, $p2 category, $p3 types).</summary>
    internal static string ReadAllSqlFor(bool category, bool eventTypes) => ReadAllVariants[(category ? 1 : 0) + (eventTypes ? 2 : 0)];

    /// <inheritdoc />
    public IAsyncEnumerable<RecordedEvent> ReadStreamAsync(string stream, ReadDirection direction = ReadDirection.Forward, long fromVersion = 1, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        EventPages.ReadStreamAsync(
            stream,
            direction,
            fromVersion,
            maxCount,
            PageSize,
            (forward, from, limit, token) => ReadAsync<IReadOnlyList<RecordedEvent>>(
                reader =>
                {
                    var command = reader.Command(forward ? ReadStreamForwardSql : ReadStreamBackwardSql, 3);
                    command.Parameters[0].Value = stream;
                    command.Parameters[1].Value = from;
                    command.Parameters[2].Value = limit;
                    return EventRows.ReadPage(command);
                },
                token),
            cancellationToken);

    /// <inheritdoc />
    public IAsyncEnumerable<RecordedEvent> ReadAllAsync(long fromPositionExclusive = 0, EventFilter? filter = null, int maxCount = int.MaxValue, CancellationToken cancellationToken = default)
    {
        var category = filter?.Category;
        var types = filter?.EventTypes is { } eventTypes ? TypesJson(eventTypes) : null;
        var sql = ReadAllSqlFor(category is not null, types is not null);
        return EventPages.ReadAllAsync(
            fromPositionExclusive,
            maxCount,
            PageSize,
            (after, limit, token) => ReadAsync<IReadOnlyList<RecordedEvent>>(
                reader =>
                {
                    var command = reader.Command(sql, 4);
                    command.Parameters[0].Value = after;
                    command.Parameters[1].Value = limit;
                    command.Parameters[2].Value = (object?)category ?? DBNull.Value;
                    command.Parameters[3].Value = (object?)types ?? DBNull.Value;
                    return EventRows.ReadPage(command);
                },
                token),
            cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask<long> GetLastPositionAsync(CancellationToken cancellationToken = default)
    {
        var position = await ReadAsync(reader => (long)reader.Command("SELECT COALESCE(MAX(position), 0) FROM herald_events", 0).ExecuteScalar()!, cancellationToken)
            .ConfigureAwait(false);
        _signal.Observe(position);
        return position;
    }

    /// <inheritdoc />
    public ValueTask<long> GetStreamVersionAsync(string stream, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        return ReadAsync(reader =>
        {
            var command = reader.Command("SELECT CASE WHEN version > deleted_up_to THEN version ELSE 0 END FROM herald_streams WHERE name = $p0", 1);
            command.Parameters[0].Value = stream;
            return command.ExecuteScalar() is long version ? version : 0;
        }, cancellationToken);
    }

    /// <inheritdoc />
    /// <remarks>
    /// Appends through this store wake waiters at once. Another process writing the same file sends no signal, so a waiter
    /// also re-reads the last position every <see cref="SqliteStoreOptions.ExternalWritesCheckInterval"/>; that only bounds
    /// how late such events are noticed and never decides what is read.
    /// </remarks>
    public async ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            // Take the signal before looking, so a commit in between still wakes this waiter.
            var signal = _signal.Next;
            if (_signal.LastPosition > afterPosition)
            {
                return;
            }

            var known = _signal.LastPosition;
            var position = await GetLastPositionAsync(cancellationToken).ConfigureAwait(false);
            if (position > afterPosition)
            {
                if (position > known)
                {
                    Log.ExternalWritesSeen(_logger, position, DataSource);
                }

                return;
            }

            if (await Signal.WaitAsync(signal, _options.ExternalWritesCheckInterval, _timeProvider, cancellationToken).ConfigureAwait(false))
            {
                // A commit of this store, or its disposal (which throws here).
                await signal.ConfigureAwait(false);
                return;
            }
        }
    }

    private static string TypesJson(IReadOnlyCollection<string> eventTypes)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartArray();
            foreach (var type in eventTypes)
            {
                writer.WriteStringValue(type);
            }

            writer.WriteEndArray();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }
}
