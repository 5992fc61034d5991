using Herald.EventSourcing;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>What the append function answered for one append.</summary>
internal readonly record struct AppendOutcome(int Status, long Version, long Position, string? Detail)
{
    public const int Appended = 0;
    public const int Idempotent = 1;
    public const int VersionConflict = 2;
    public const int IdempotencyConflict = 3;

    public bool Succeeded => Status is Appended or Idempotent;

    public AppendResult Result => new(Version, Position);

    /// <summary>Reads the row of the append function: one array per column, an element per member.</summary>
    public static AppendOutcome[] ReadRow(NpgsqlDataReader reader, int members)
    {
        var statuses = reader.GetFieldValue<int[]>(0);
        var versions = reader.GetFieldValue<long[]>(1);
        var positions = reader.GetFieldValue<long[]>(2);
        var details = reader.GetFieldValue<string?[]>(3);
        if (statuses.Length != members)
        {
            throw new InvalidOperationException($"The append function answered for {statuses.Length} appends; it was given {members}.");
        }

        var outcomes = new AppendOutcome[members];
        for (var i = 0; i < members; i++)
        {
            outcomes[i] = new AppendOutcome(statuses[i], versions[i], positions[i], details[i]);
        }

        return outcomes;
    }

    public ConcurrencyException ToException(string stream, ExpectedVersion expected) => Status switch
    {
        VersionConflict => new ConcurrencyException(stream, expected, Version),
        IdempotencyConflict => new ConcurrencyException(stream, expected, Version, Detail ?? "The event ids do not match the stored events."),
        _ => throw new InvalidOperationException($"Append status {Status} is no conflict."),
    };
}
