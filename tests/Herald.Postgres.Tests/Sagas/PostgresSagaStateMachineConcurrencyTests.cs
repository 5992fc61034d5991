using System.Text.Json;
using Herald.Conformance;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Postgres.Tests.Transport;
using Herald.Reliability.DeadLetters;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Tests.Sagas;

/// <summary>
/// A state machine on two nodes sharing one PostgreSQL schema (saga store and queue): events for one instance handled at
/// once on both serialise through the instance's version, so none is lost and none lands twice.
/// </summary>
public sealed class PostgresSagaStateMachineConcurrencyTests : IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();
    private readonly string _endpoint = "pgsm-" + Guid.NewGuid().ToString("N")[..8];

    [MessageType("pgsm-opened")]
    public sealed record Opened(string Id);

    [MessageType("pgsm-line-added")]
    public sealed record LineAdded(string Id, int Line);

    [MessageType("pgsm-closed")]
    public sealed record Closed(string Id);

    public sealed class Basket
    {
        public List<int> Lines { get; set; } = [];
    }

    // The version conflicts a delivery ran again after (the retry step's event 2014), on both nodes.
    private readonly LogEventCounter _conflicts = new(2014);

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    private static SagaStateMachine<Basket> Machine() =>
        SagaStateMachine.Create<Basket>("pgsm-baskets", m => m
            .Correlate<Opened>(e => e.Id)
            .Correlate<LineAdded>(e => e.Id)
            .Correlate<Closed>(e => e.Id)
            .Initially<Opened>("Open")
            .During("Open", s => s
                .When<LineAdded>("Open", async (saga, line) =>
                {
                    // Widens the window between load and save, so the nodes' attempts do conflict.
                    await Task.Yield();
                    saga.Data.Lines.Add(line.Line);
                })
                .When<Closed>("Closed"))
            .Final("Closed"));

    private async Task<IHost> StartAsync()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders().SetMinimumLevel(LogLevel.Debug).AddProvider(_conflicts);
        builder.Services.AddHerald(h => h
            .Configure(o =>
            {
                o.EndpointName = _endpoint;
                o.MaxConcurrency = 4;
            })
            .UsePostgresStoreAndQueue(_schema)
            .AddMessageType<Opened>().AddMessageType<LineAdded>().AddMessageType<Closed>()
            .AddSaga(Machine()));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [Fact]
    public async Task EventsForOneInstance_HandledAtOnceOnTwoNodes_AllLandOnce_AndNoneAfterTheFinalState()
    {
        using var first = await StartAsync();
        using var second = await StartAsync();
        var bus = first.Services.GetRequiredService<IMessageBus>();
        var store = first.Services.GetRequiredService<ISagaStore>();
        const int count = 40;

        await bus.SendAsync(new Opened("b-1"));
        await Eventually.UntilAsync(async () => await store.LoadAsync("pgsm-baskets", "b-1") is not null, "the basket opens", TimeSpan.FromSeconds(30));
        await Task.WhenAll(Enumerable.Range(1, count).Select(i => bus.SendAsync(new LineAdded("b-1", i)).AsTask()));
        var full = await Eventually.ValueAsync(
            async () => await store.LoadAsync("pgsm-baskets", "b-1") is { Version: count + 1 } done ? done : null, $"all {count} lines land", TimeSpan.FromSeconds(60));

        var lines = JsonDocument.Parse(full.Data).RootElement.GetProperty("lines").EnumerateArray().Select(l => l.GetInt32()).Order();
        Assert.Equal(Enumerable.Range(1, count), lines);

        // Closed races a last batch of lines: whatever lands after it changes nothing.
        await Task.WhenAll([bus.SendAsync(new Closed("b-1")).AsTask(), .. Enumerable.Range(count + 1, 10).Select(i => bus.SendAsync(new LineAdded("b-1", i)).AsTask())]);
        var closed = await Eventually.ValueAsync(
            async () => await store.LoadAsync("pgsm-baskets", "b-1") is { Status: SagaStatus.Completed } done ? done : null, "the basket closes", TimeSpan.FromSeconds(60));
        await Eventually.UntilAsync(
            async () => await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM {_schema}.queue_messages") == 0, "the queue drains", TimeSpan.FromSeconds(60));

        var after = (await store.LoadAsync("pgsm-baskets", "b-1"))!;
        Assert.Equal(closed.Version, after.Version);
        var landed = JsonDocument.Parse(after.Data).RootElement.GetProperty("lines").EnumerateArray().Select(l => l.GetInt32()).ToList();
        Assert.Equal(landed.Count, landed.Distinct().Count());
        Assert.Equal(1 + landed.Count + 1, after.Version);
        Assert.Empty(await first.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery()));

        // The race happened: attempts lost to the other's commit and ran again.
        Assert.True(_conflicts.Count > 0, "no attempt conflicted");
    }
}
