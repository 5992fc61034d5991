using Herald.EventSourcing;
using Herald.Internal;
using Herald.Postgres.Internal;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>Turns event rows back into <see cref="RecordedEvent"/>s: the stream's columns around the envelope's (<see cref="EnvelopeColumns"/>).</summary>
internal static class EventRows
{
    /// <summary>
    /// The events of a read page's query from the row <paramref name="reader"/> is on, in its order, up to a row without an
    /// event (the empty page of a <c>$all</c> join) or until their bodies reach the page's byte budget
    /// (<see cref="EventPages.AddToPage"/>). Rows past that are left to the reader's disposal, which reads past them.
    /// </summary>
    public static async Task<List<RecordedEvent>> ReadPageAsync(NpgsqlDataReader reader, int first, int limit, CancellationToken cancellationToken)
    {
        var page = new List<RecordedEvent>(Math.Min(limit, 256));
        var bytes = 0L;
        while (!reader.IsDBNull(first) && !EventPages.AddToPage(page, Read(reader, first), ref bytes) && await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
        }

        return page;
    }

    /// <summary>
    /// Reads the event columns of <see cref="EventStoreSql"/> starting at <paramref name="first"/>. The row is buffered, so a
    /// failure here is its content (a column another tool changed), thrown as <see cref="UnreadableEventException"/>.
    /// </summary>
    public static RecordedEvent Read(NpgsqlDataReader reader, int first)
    {
        var position = reader.GetInt64(first);
        try
        {
            return new(
                reader.GetString(first + 1),
                reader.GetInt64(first + 2),
                position,
                reader.GetFieldValue<DateTimeOffset>(first + 3 + EnvelopeColumns.Count),
                EnvelopeColumns.Read(reader, first + 3, deliveryAttempt: 0));
        }
        catch (Exception ex)
        {
            // What still reads of the row goes with the failure, for a subscription that dead-letters it.
            var recordedAt = Salvage.Read(() => reader.GetFieldValue<DateTimeOffset>(first + 3 + EnvelopeColumns.Count), DateTimeOffset.UnixEpoch);
            throw new UnreadableEventException(position, Salvage.Read(() => reader.GetString(first + 1), null), EnvelopeColumns.Salvaged(reader, first + 3, deliveryAttempt: 1, recordedAt), ex);
        }
    }
}
