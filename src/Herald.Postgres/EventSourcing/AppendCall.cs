using Herald.Postgres.Internal;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// Builds one call of the append function for appends to distinct streams: their columns concatenated into arrays, so
/// the whole set is written by a few set-based statements inside one function call.
/// </summary>
internal static class AppendCall
{
    /// <summary>The command for <paramref name="members"/> (distinct streams), their events numbered from <paramref name="firstOrdinal"/>.</summary>
    public static NpgsqlBatchCommand Create(EventStoreSql sql, IReadOnlyList<PendingAppend> members, int firstOrdinal, DateTime recordedAt)
    {
        var command = new NpgsqlBatchCommand(sql.Append);
        AddParameters(command.Parameters, sql, members, firstOrdinal, recordedAt);
        return command;
    }

    /// <summary>Adds the 20 positional parameters of <see cref="EventStoreSql.Append"/>.</summary>
    public static void AddParameters(NpgsqlParameterCollection parameters, EventStoreSql sql, IReadOnlyList<PendingAppend> members, int firstOrdinal, DateTime recordedAt)
    {
        var count = members.Count;
        var total = 0;
        foreach (var member in members)
        {
            total += member.Count;
        }

        var streams = new string[count];
        var categories = new string[count];
        var expected = new long[count];
        var first = new int[count];
        var counts = new int[count];
        var owners = new int[total];
        var columns = new EnvelopeArrays(total);
        var at = 0;
        for (var m = 0; m < count; m++)
        {
            var member = members[m];
            var n = member.Count;
            streams[m] = member.Stream;
            categories[m] = member.Category;
            expected[m] = member.Expected.Value;
            first[m] = at + 1;
            counts[m] = n;
            Array.Fill(owners, m + 1, at, n);
            foreach (ref readonly var row in member.Rows.AsSpan())
            {
                columns.Set(at++, row);
            }
        }

        parameters.Add(new NpgsqlParameter<long> { TypedValue = sql.PositionOffset, NpgsqlDbType = NpgsqlDbType.Bigint });
        parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = recordedAt, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        parameters.Add(new NpgsqlParameter<int> { TypedValue = firstOrdinal, NpgsqlDbType = NpgsqlDbType.Integer });
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = streams, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<string[]> { TypedValue = categories, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        parameters.Add(new NpgsqlParameter<long[]> { TypedValue = expected, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bigint });
        parameters.Add(new NpgsqlParameter<int[]> { TypedValue = first, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer });
        parameters.Add(new NpgsqlParameter<int[]> { TypedValue = counts, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer });
        parameters.Add(new NpgsqlParameter<int[]> { TypedValue = owners, NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Integer });
        columns.AddTo(parameters);
    }
}
