using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams.Tests;

/// <summary>
/// A grouping key too long for PostgreSQL's primary-key index (an entry of at most about 2.7 kB) is refused alike on every
/// state store: its event is dead-lettered naming the operator and the length, and the events after it are counted.
/// Regression: on PostgreSQL the commit holding the key failed (54000, index row size exceeds the maximum) every time the
/// processor restarted and replayed the event, so one event stalled the stream for good.
/// </summary>
internal static class LongKeyScenario
{
    public static async Task RunAsync(Action<HeraldBuilder> configure)
    {
        var host = await ProcessorScenario.StartHostAsync(configure);
        try
        {
            var events = host.Services.GetRequiredService<IEventStore>();
            var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();

            // Random, so PostgreSQL cannot compress the index entry below its limit.
            var longKey = string.Concat(Enumerable.Range(0, 100).Select(_ => Guid.NewGuid().ToString("N")));
            await events.AppendAsync("order-1", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(1))]);
            await events.AppendAsync("order-2", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(2) with { ProductId = longKey })]);

            // The last append's own position, not GetLastPositionAsync: on PostgreSQL an older transaction elsewhere on
            // the server (another test's) holds the readable head back, and that returns what is readable after 10 s.
            var head = (await events.AppendAsync("order-5", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(5))])).LastPosition;

            var builder = new StreamBuilder();
            builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).Count("windowed");
            await using var processor = new StreamProcessor("long-keys", builder.Build(), host.Services);
            await processor.StartAsync();
            await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));

            Assert.False(processor.Completion.IsCompleted, $"the processor stopped: {processor.Completion.Exception}");
            var windows = await processor.QueryWindowsAsync<string, long>("windowed", "p1", DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
            Assert.Equal(2L, windows.Sum(w => w.Value)); // orders 1 and 5
            Assert.Empty(await processor.QueryWindowsAsync<string, long>("windowed", longKey, DateTimeOffset.MinValue, DateTimeOffset.MaxValue));
            var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:long-keys" }));
            Assert.Equal(DeadLetterCause.NotRetryable, deadLetter.Cause);
            Assert.Contains("window-aggregate-", deadLetter.ErrorMessage, StringComparison.Ordinal);
            Assert.Contains("bytes", deadLetter.ErrorMessage, StringComparison.Ordinal);
        }
        finally
        {
            await host.StopAsync();
            host.Dispose();
        }
    }
}

public sealed class LongKeyTests
{
    [Fact]
    public async Task InMemory_AKeyTooLongForEveryStateStore_IsDeadLetteredAndTheStreamGoesOn() =>
        await LongKeyScenario.RunAsync(_ => { });
}

public sealed class SqliteLongKeyTests : IDisposable
{
    private readonly string _file = TestSqlite.NewFile("long-key");

    [Fact]
    public async Task Sqlite_AKeyTooLongForEveryStateStore_IsDeadLetteredAndTheStreamGoesOn() =>
        await LongKeyScenario.RunAsync(h => h.UseSqlite(_file).UseSqliteStreamState());

    public void Dispose() => TestSqlite.Delete(_file);
}

public sealed class PostgresLongKeyTests : IAsyncLifetime
{
    private readonly string _schema = TestPostgres.NewSchema();

    [Fact]
    public async Task Postgres_AKeyTooLongForItsPrimaryKeyIndex_IsDeadLetteredInsteadOfFailingEveryCommit() =>
        await LongKeyScenario.RunAsync(h => h.UsePostgres(TestPostgres.ConnectionString, o => o.Schema = _schema).UsePostgresStreamState());

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => TestPostgres.DropAsync(_schema);
}
