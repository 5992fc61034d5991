using Herald.Sqlite.EventSourcing;
using System.Diagnostics;
using System.Globalization;
using Herald.EventSourcing;
using Herald.Messages;
using Xunit.Abstractions;

namespace Herald.Sqlite.Tests;

/// <summary>
/// A small throughput harness: prints events per second for single appends (1 and 16 writers), batches of 100 and reading
/// the log back. It asserts only that everything was stored and read in order, never a speed. Sizes are small so the suite
/// stays quick; set HERALD_SQLITE_BENCH_SCALE (e.g. 10) for a longer, steadier measurement.
/// </summary>
public sealed class SqliteThroughputTests(ITestOutputHelper output)
{
    private static readonly int Scale = int.TryParse(Environment.GetEnvironmentVariable("HERALD_SQLITE_BENCH_SCALE"), CultureInfo.InvariantCulture, out var scale) && scale > 0 ? scale : 1;

    [Theory]
    [InlineData(SqliteSynchronousMode.Full)]
    [InlineData(SqliteSynchronousMode.Normal)]
    public async Task Throughput_SingleGroupedAndBatchedAppendsAndReadAll_PrintsEventsPerSecond(SqliteSynchronousMode synchronous)
    {
        using var database = new TempDatabase();
        await using var store = await SqliteEventStore.OpenAsync(database.Path, o => o.Synchronous = synchronous);
        var body = new byte[200];
        var expected = 0L;

        var singles = 300 * Scale;
        var elapsed = await TimeAsync(async () =>
        {
            for (var i = 0; i < singles; i++)
            {
                await store.AppendAsync($"single-{i % 50}", ExpectedVersion.Any, [Event(body)]);
            }
        });
        expected += singles;
        Report($"single appends, 1 writer ({synchronous})", singles, elapsed);

        const int Writers = 16;
        var perWriter = 150 * Scale;
        var (transactionsBefore, writesBefore) = store.WriterStatistics;
        elapsed = await TimeAsync(() => Task.WhenAll(Enumerable.Range(0, Writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < perWriter; i++)
            {
                await store.AppendAsync($"grouped-{w}", ExpectedVersion.Any, [Event(body)]);
            }
        }))));
        expected += Writers * perWriter;
        var (transactions, writes) = store.WriterStatistics;
        Report($"single appends, {Writers} writers ({synchronous})", Writers * perWriter, elapsed,
            $"{(writes - writesBefore) / (double)(transactions - transactionsBefore):0.0} appends per transaction");

        var batches = 100 * Scale;
        elapsed = await TimeAsync(async () =>
        {
            for (var i = 0; i < batches; i++)
            {
                await store.AppendAsync($"batch-{i % 20}", ExpectedVersion.Any, Enumerable.Range(0, 100).Select(_ => Event(body)).ToArray());
            }
        });
        expected += batches * 100L;
        Report($"batches of 100, 1 writer ({synchronous})", batches * 100, elapsed);

        const int BatchWriters = 4;
        elapsed = await TimeAsync(() => Task.WhenAll(Enumerable.Range(0, BatchWriters).Select(w => Task.Run(async () =>
        {
            for (var i = 0; i < batches / BatchWriters; i++)
            {
                await store.AppendAsync($"batches-{w}", ExpectedVersion.Any, Enumerable.Range(0, 100).Select(_ => Event(body)).ToArray());
            }
        }))));
        expected += batches / BatchWriters * BatchWriters * 100L;
        Report($"batches of 100, {BatchWriters} writers ({synchronous})", batches / BatchWriters * BatchWriters * 100, elapsed);

        var read = 0L;
        var last = 0L;
        elapsed = await TimeAsync(async () =>
        {
            await foreach (var recorded in store.ReadAllAsync())
            {
                Assert.True(recorded.Position > last);
                last = recorded.Position;
                read++;
            }
        });
        Report($"ReadAll ({synchronous})", read, elapsed);

        Assert.Equal(expected, read);
        Assert.Equal(expected, await store.GetLastPositionAsync());
    }

    private static Envelope Event(byte[] body) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "bench-happened",
        Time = DateTimeOffset.UnixEpoch,
        Body = body,
    };

    private static async Task<TimeSpan> TimeAsync(Func<Task> run)
    {
        var started = Stopwatch.GetTimestamp();
        await run();
        return Stopwatch.GetElapsedTime(started);
    }

    private void Report(string what, long events, TimeSpan elapsed, string? note = null) =>
        output.WriteLine($"{what}: {events} events in {elapsed.TotalMilliseconds:0} ms = {events / elapsed.TotalSeconds:0} events/s{(note is null ? "" : "; " + note)}");
}
