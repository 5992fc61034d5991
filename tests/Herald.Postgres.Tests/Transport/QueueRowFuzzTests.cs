using System.Globalization;
using System.Text;
using System.Text.Json;
using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.Hosting;
using Herald.Postgres.Transport;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using NpgsqlTypes;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Transport;

/// <summary>
/// Issue 10: generated PostgreSQL queue rows: every envelope column NULL or of any value its type can hold (any uuid, text
/// of any length and script, any int, times at infinity and beyond the .NET calendar (4713 BC, 294276 AD), headers that
/// are JSON but no object of strings (arrays, numbers, null, nesting deeper than the reader allows, 100 kB), bodies of any
/// bytes, invalid UTF-8 included). The columns' types keep invalid UTF-8 and NUL out of text and non-JSON out of jsonb, so
/// those are left to the SQLite row fuzz test and the brokers'.
/// <para>
/// The split: <see cref="GeneratedRows_NeverMakeTheClaimThrow_AndEachIsHandledOrDeadLetteredWithAReason_Issue10"/> decodes
/// 10,000 generated rows in process with the function the claim reads each row with
/// (<see cref="PostgresQueueBackend.Read"/>), on real Npgsql readers over the real column types (the rows are selected from
/// arrays, in chunks of 100, not inserted), and feeds each envelope to the consuming chain (<see cref="FuzzPipeline"/>).
/// <see cref="QueueRowHostileBatchTests"/> inserts 300 generated hostile rows into a real queue table, interleaved with
/// 300 good messages, and drains them with the real consumer.
/// </para>
/// </summary>
public sealed class QueueRowFuzzTests(ITestOutputHelper output)
{
    private const int RowsPerCase = 100;

    private const string Select =
        "SELECT u.ord, clock_timestamp(), 0, u.a::uuid, u.b, u.c::int, u.d::timestamptz, u.e, u.f, u.g, u.h, u.i, u.j::jsonb::text, u.k " +
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bytea[]) " +
        "WITH ORDINALITY AS u(a, b, c, d, e, f, g, h, i, j, k, ord) ORDER BY u.ord";

    [Fact]
    public async Task GeneratedRows_NeverMakeTheClaimThrow_AndEachIsHandledOrDeadLetteredWithAReason_Issue10()
    {
        await using var pipeline = await FuzzPipeline.StartAsync();
        await using var dataSource = NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString);
        var rows = Gen.Frequency((1, QueueRows.Valid), (3, QueueRows.Hostile(nullable: true)));

        var cases = await Fuzz.RunAsync(
            rows.Array[RowsPerCase],
            async chunk =>
            {
                await using var command = dataSource.CreateCommand(Select);
                QueueRows.AddColumns(command.Parameters, chunk);
                await using var reader = await command.ExecuteReaderAsync();
                var index = 0;
                while (await reader.ReadAsync())
                {
                    var message = PostgresQueueBackend.Read(reader, reader.GetInt64(0), deliveryAttempt: 1, DateTimeOffset.UtcNow);

                    await pipeline.DeliverDecodedAsync(message.Envelope, message.DecodeFailure, strict: false);
                    index++;
                }

                Assert.Equal(chunk.Length, index);
            },
            output.WriteLine,
            cases: Fuzz.Cases / RowsPerCase,
            print: chunk => string.Join(Environment.NewLine, chunk.Select((row, i) => $"row {i}: {row}")));

        var total = cases * RowsPerCase;
        output.WriteLine($"{total} rows in {cases} cases of {RowsPerCase}");
        pipeline.AssertRun(total, output.WriteLine);
    }
}

/// <summary>
/// The end-to-end half of <see cref="QueueRowFuzzTests"/>: 300 generated hostile rows inserted straight into a real queue
/// table (every NOT NULL column set, as the table demands) between 300 good messages, drained by the real consumer.
/// </summary>
public sealed class QueueRowHostileBatchTests(ITestOutputHelper output) : HostileBatchConformance<QueueRows.Row>(output), IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    protected override int HostileCount => 300;

    protected override Gen<QueueRows.Row> HostileMessages => QueueRows.Hostile(nullable: false);

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    protected override void UseTransport(HeraldBuilder herald) => herald.UsePostgresStoreAndQueue(_schema);

    protected override async Task<bool> WriteHostileAsync(string queue, QueueRows.Row row)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var insert = new NpgsqlCommand(
            $"INSERT INTO \"{_schema}\".queue_messages (queue, message_id, message_type, schema_version, time, correlation_id, causation_id, user_id, " +
            "partition_key, content_type, headers, body, enqueued_at, visible_at) " +
            "VALUES ($1, $2::uuid, $3, $4::int, $5::timestamptz, $6, $7, $8, $9, $10, $11::jsonb, $12, now(), clock_timestamp())",
            connection);
        insert.Parameters.Add(new NpgsqlParameter<string> { TypedValue = queue });
        foreach (var value in row.Texts)
        {
            insert.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Text, Value = (object?)value ?? DBNull.Value });
        }

        insert.Parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Bytea, Value = (object?)row.Body ?? DBNull.Value });
        return await insert.ExecuteNonQueryAsync() == 1;
    }

    protected override Task<long> CountQueuedAsync(string queue) =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".queue_messages WHERE queue = '{queue}'");
}

/// <summary>Generated queue rows, each column as the text PostgreSQL casts to the column's type (the body as bytes).</summary>
public static class QueueRows
{
    /// <summary>Rows the handler of <see cref="FuzzPipeline"/> takes.</summary>
    public static Gen<Row> Valid { get; } =
        from id in Gen.Guid
        from body in FuzzInputs.ValidBody
        select new Row(id.ToString(), FuzzInputs.OrderType, "1", "2030-01-01 00:00:00+00", null, null, null, null, "application/json", null, body);

    private static readonly Gen<string> Text = Gen.OneOf(FuzzInputs.MessageType, FuzzInputs.ContentType, FuzzInputs.IdText, Gen.String[0, 60]).Select(Clean);

    private static readonly Gen<string> Time = Gen.OneOf(
        Gen.Const("2030-01-01 00:00:00+00"),
        Gen.Const("infinity"),
        Gen.Const("-infinity"),
        Gen.Const("4713-01-01 00:00:00+00 BC"),
        Gen.Const("0001-01-01 00:00:00+00 BC"),
        Gen.Const("0001-01-01 00:00:00+00"),
        Gen.Const("0001-01-01 00:00:00-14"),
        Gen.Const("9999-12-31 23:59:59.999999+00"),
        Gen.Const("9999-12-31 23:59:59+14"),
        Gen.Const("10000-01-01 00:00:00+00"),
        Gen.Const("294276-12-31 23:59:59+00"),
        Gen.Long[DateTimeOffset.MinValue.UtcTicks, DateTimeOffset.MaxValue.UtcTicks]
            .Select(t => new DateTimeOffset(t, TimeSpan.Zero).ToString("yyyy-MM-dd HH:mm:ss.ffffffzzz", CultureInfo.InvariantCulture)));

    // Huge values are rare: each megabyte goes to the server and back, and the suite has many rows to get through.
    private static readonly Gen<string> Headers = Gen.Frequency(
        (30, Gen.OneOf(
            FuzzInputs.Headers.Select(h => JsonSerializer.Serialize(h.Select(e => KeyValuePair.Create(Clean(e.Key), Clean(e.Value))).DistinctBy(e => e.Key).ToDictionary())),
            Gen.Const("{}"),
            Gen.Const("{\"a\":1}"),
            Gen.Const("{\"a\":null}"),
            Gen.Const("{\"a\":{\"deep\":[1,2]}}"),
            Gen.Const("{\"a\":true,\"b\":\"c\"}"),
            Gen.Const("[1,2]"),
            Gen.Const("\"text\""),
            Gen.Const("7"),
            Gen.Const("null"),
            Gen.Int[60, 200].Select(depth => string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "\"x\"" + new string('}', depth)))),
        (1, Gen.Const(JsonSerializer.Serialize(new Dictionary<string, string> { ["big"] = new string('x', 100_000) }))));

    private static readonly Gen<byte[]?> Body = Gen.Frequency(
        (60, FuzzInputs.Body.Where(b => b.Length <= 20_000).Select(b => (byte[]?)b)),
        (1, Gen.Const((byte[]?)new byte[150_000])));

    /// <summary>Rows with any column wrong; with <paramref name="nullable"/>, any column NULL too (more than the table allows).</summary>
    public static Gen<Row> Hostile(bool nullable)
    {
        Gen<string?> Maybe(Gen<string> gen, bool required) =>
            nullable || !required ? Gen.Frequency((1, Gen.Const((string?)null)), (7, gen.Select(s => (string?)s))) : gen.Select(s => (string?)s);

        var schemaVersion = Gen.OneOf(Gen.Int[-3, 4], Gen.Const(int.MaxValue), Gen.Const(int.MinValue), Gen.Int).Select(v => v.ToString(CultureInfo.InvariantCulture));
        var body = nullable ? Gen.Frequency((1, Gen.Const((byte[]?)null)), (7, Body)) : Body;
        return
            from id in Maybe(Gen.Guid.Select(g => g.ToString()), required: true)
            from type in Maybe(FuzzInputs.MessageType.Select(Clean), required: true)
            from version in Maybe(schemaVersion, required: true)
            from time in Maybe(Time, required: true)
            from correlation in Maybe(Text, required: false)
            from causation in Maybe(Text, required: false)
            from user in Maybe(Text, required: false)
            from partition in Maybe(Text, required: false)
            from contentType in Maybe(FuzzInputs.ContentType.Select(Clean), required: true)
            from headers in Maybe(Headers, required: false)
            from b in body
            select new Row(id, type, version, time, correlation, causation, user, partition, contentType, headers, b);
    }

    /// <summary>Adds the rows' columns as the eleven array parameters of an <c>unnest</c>.</summary>
    public static void AddColumns(NpgsqlParameterCollection parameters, IReadOnlyList<Row> rows)
    {
        for (var column = 0; column < 10; column++)
        {
            parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text, Value = rows.Select(r => r.Texts[column]).ToArray() });
        }

        parameters.Add(new NpgsqlParameter { NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Bytea, Value = rows.Select(r => r.Body).ToArray() });
    }

    // PostgreSQL text holds neither NUL nor lone surrogates: the column type keeps them out, so they are not generated here.
    private static string Clean(string text) => Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(text)).Replace("\0", "", StringComparison.Ordinal);

    /// <summary>One generated row: the envelope's columns in the order of the table.</summary>
    public sealed record Row(
        string? MessageId,
        string? MessageType,
        string? SchemaVersion,
        string? Time,
        string? CorrelationId,
        string? CausationId,
        string? UserId,
        string? PartitionKey,
        string? ContentType,
        string? Headers,
        byte[]? Body)
    {
        /// <summary>The text columns, in order.</summary>
        public string?[] Texts => [MessageId, MessageType, SchemaVersion, Time, CorrelationId, CausationId, UserId, PartitionKey, ContentType, Headers];

        /// <inheritdoc />
        public override string ToString() =>
            string.Join(", ", Texts.Select(t => t is null ? "NULL" : t.Length <= 60 ? $"'{t}'" : $"'{t[..60]}...' ({t.Length} chars)"))
            + $", body {(Body is null ? "NULL" : $"{Body.Length} bytes")}";
    }
}
