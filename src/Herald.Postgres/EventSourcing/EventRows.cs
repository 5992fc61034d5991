using Herald.EventSourcing;
using Herald.Internal;
using Herald.Postgres.Internal;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>Turns event rows back into <see cref="RecordedEvent"/>s: the stream's columns around the envelope's (<see cref="EnvelopeColumns"/>).</summary>
internal static class EventRows
{
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
