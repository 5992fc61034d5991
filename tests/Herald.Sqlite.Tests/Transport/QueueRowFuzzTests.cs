using System.Text;
using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.Sqlite.Internal;
using Herald.Sqlite.Transport;
using Xunit.Abstractions;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>
/// Issue 10: generated queue rows (every envelope column of any SQLite storage class: NULL, integers of any size, text,
/// blobs of any length, invalid UTF-8, impossible times and offsets, headers that are no JSON object, hostile types)
/// through the function the claim reads each row with. It never throws, so a corrupt row never fails the claim: each
/// row decodes, or carries its decode failure and what could be salvaged; what comes out goes through the real consuming
/// chain (<see cref="FuzzPipeline"/>), where each row is handled once or dead-lettered once with its reason.
/// </summary>
public sealed class QueueRowFuzzTests(ITestOutputHelper output)
{
    private const int First = 2;

    private static readonly Gen<object?> Column = Gen.OneOf(
        Gen.Bool.Select(_ => (object?)null),
        Gen.Long.Select(l => (object?)l),
        Gen.Int[-5, 5].Select(i => (object?)(long)i),
        Gen.String[0, 30].Select(s => (object?)s),
        Gen.Byte.Array[0, 40].Select(b => (object?)b),
        Gen.Guid.Select(g => (object?)g.ToByteArray(bigEndian: true)),
        Gen.Bool.Select(_ => (object?)"{\"a\":\"b\"}"),
        Gen.Bool.Select(_ => (object?)"[1,2]"),
        Gen.Bool.Select(_ => (object?)"{\"a\":{\"deep\":1}}"),
        Gen.Bool.Select(_ => (object?)new byte[] { 0xFF, 0xFE, 0xC0, 0x80 }),
        Gen.Bool.Select(_ => (object?)DateTimeOffset.MaxValue.UtcTicks),
        Gen.Bool.Select(_ => (object?)long.MaxValue),
        Gen.Bool.Select(_ => (object?)"conformance-message"),
        Gen.Bool.Select(_ => (object?)FuzzInputs.OrderType));

    [Fact]
    public async Task GeneratedRows_NeverMakeTheClaimThrow_AndAFailureCarriesItsReason_Issue10()
    {
        await using var pipeline = await FuzzPipeline.StartAsync();
        var valid = Gen.Select(Gen.Guid, FuzzInputs.ValidBody, (g, body) => new object?[]
        {
            0L, 0L, g.ToByteArray(bigEndian: true), FuzzInputs.OrderType, 1L, new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero).UtcTicks, 0L, null, null, null, null,
            "application/json", "{}", body,
        });
        var broken = Column.Array[14];
        var mixed = Gen.Frequency((1, valid), (3, broken)).SelectMany(row => Gen.Int[0, 13].Select(i => (row, i)));
        var gen = Gen.OneOf(
            broken,
            mixed.SelectMany(x => Column.Select(value =>
            {
                var row = (object?[])x.row.Clone();
                row[x.i] = value;
                return row;
            })));

        var cases = await Fuzz.RunAsync(
            gen,
            async row =>
            {
                var message = QueueStatements.Read(new GeneratedRow(row), id: 1, deliveryAttempt: 1, now: DateTimeOffset.UtcNow.UtcTicks);

                await pipeline.DeliverDecodedAsync(message.Envelope, message.DecodeFailure, strict: false);
            },
            output.WriteLine);

        pipeline.AssertRun(cases, output.WriteLine);
    }

    /// <summary>A row of generated SQLite values, read with SQLite's own conversions (as sqlite3_column_* does).</summary>
    private readonly struct GeneratedRow(object?[] values) : IColumnReader
    {
        public bool IsNull(int column) => values[column] is null;

        public long Int64(int column) => values[column] switch
        {
            long l => l,
            string s => long.TryParse(s, out var parsed) ? parsed : 0,
            _ => 0,
        };

        public string Text(int column) => values[column] switch
        {
            null => null!,
            long l => l.ToString(System.Globalization.CultureInfo.InvariantCulture),
            string s => s,
            byte[] b => Encoding.UTF8.GetString(b),
            _ => "",
        };

        public byte[] Bytes(int column) => values[column] switch
        {
            null => [],
            long l => Encoding.UTF8.GetBytes(l.ToString(System.Globalization.CultureInfo.InvariantCulture)),
            string s => Encoding.UTF8.GetBytes(s),
            byte[] b => (byte[])b.Clone(),
            _ => [],
        };

        public Guid Guid(int column) => new(Bytes(column), bigEndian: true);
    }
}
