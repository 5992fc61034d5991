using Herald.EventSourcing;
using Herald.Postgres.EventSourcing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Postgres.Tests.DependencyInjection;

public sealed class UsePostgresTests
{
    [Fact]
    public async Task UsePostgres_RegistersOneStoreForAllThreePorts_AndCreatesTheSchemaAtStart()
    {
        await using var schema = new TemporarySchema();
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 5, 6, 7, 8, 9, TimeSpan.Zero));
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton<TimeProvider>(clock);
        builder.Services.AddHerald(h => h.UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = schema.Name));
        using var host = builder.Build();

        await host.StartAsync();
        try
        {
            var store = host.Services.GetRequiredService<IEventStore>();
            Assert.IsType<PostgresEventStore>(store);
            Assert.Same(store, host.Services.GetRequiredService<ICheckpointStore>());
            Assert.Same(store, host.Services.GetRequiredService<ISnapshotStore>());
            Assert.Equal(Herald.Postgres.Schema.Migrations.Latest, await PostgresTestDatabase.ScalarAsync<int>($"SELECT max(version) FROM \"{schema.Name}\".schema_version"));

            var stream = TestEvents.NewStream();
            await store.AppendAsync(stream, ExpectedVersion.NoStream, TestEvents.Many(1));
            Assert.Equal(clock.GetUtcNow(), (await TestEvents.ReadStreamAsync(store, stream)).Single().RecordedAt);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task UsePostgres_WithAnInvalidSchemaName_FailsTheStart()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = "Not A Schema"));
        using var host = builder.Build();

        var error = await Assert.ThrowsAsync<OptionsValidationException>(() => host.StartAsync());

        Assert.Contains("Not A Schema", error.Message, StringComparison.Ordinal);
    }
}
