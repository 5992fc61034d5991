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

    public static AppendOutcome Read(NpgsqlDataReader reader) => new(
        reader.GetInt32(0),
        reader.GetInt64(1),
        reader.IsDBNull(2) ? 0 : reader.GetInt64(2),
        reader.IsDBNull(3) ? null : reader.GetString(3));

    public ConcurrencyException ToException(string stream, ExpectedVersion expected) => Status switch
    {
        VersionConflict => new ConcurrencyException(stream, expected, Version),
        IdempotencyConflict => new ConcurrencyException(stream, expected, Version, Detail ?? "The event ids do not match the stored events."),
        _ => throw new InvalidOperationException($"Append status {Status} is no conflict."),
    };
}
