using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams.Tests;

/// <summary>
/// A processor keeps its checkpoint under "stream:{name}" and, where leases share its partitions, a fence under
/// "$stream-leader:stream:{name}" (with ":{partition}:stage-{stage}" suffixes when it runs partitions and stages), and a
/// checkpoint store keeps ids of at most <see cref="CheckpointValidation.MaxSubscriptionIdLength"/> characters.
/// Regression: a name too long for them was accepted; the processor read no checkpoint under it and failed at its first
/// save (or at taking its fence), mid-run, instead of being refused when it was created.
/// </summary>
internal static class LongNameScenario
{
    // "$stream-leader:stream:" before the name: the fence of a one-partition processor is its longest key.
    public const int LongestName = CheckpointValidation.MaxSubscriptionIdLength - 22;

    public static async Task RunAsync(Action<HeraldBuilder> configure)
    {
        var host = await ProcessorScenario.StartHostAsync(configure);
        try
        {
            var events = host.Services.GetRequiredService<IEventStore>();
            var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();

            // The last order's own position, not GetLastPositionAsync: on PostgreSQL an older transaction elsewhere on
            // the server (another test's) holds the readable head back, and that returns what is readable after 10 s.
            var head = 0L;
            for (var i = 0; i < 3; i++)
            {
                head = Math.Max(head, (await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))])).LastPosition);
            }

            var longest = new string('n', LongestName);
            await using (var processor = new StreamProcessor(longest, CountTopology(), host.Services))
            {
                await processor.StartAsync();
                await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));
                await processor.StopAsync();
                Assert.False(processor.Completion.IsFaulted, $"the processor failed: {processor.Completion.Exception}");
            }

            Assert.Equal(head, await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync("stream:" + longest));

            var refused = Assert.ThrowsAny<ArgumentException>(() => new StreamProcessor(longest + "n", CountTopology(), host.Services));
            Assert.Equal("name", refused.ParamName);
            Assert.Contains($"at most {LongestName} characters", refused.Message, StringComparison.Ordinal);
            Assert.Contains(CheckpointValidation.MaxSubscriptionIdLength.ToString(System.Globalization.CultureInfo.InvariantCulture), refused.Message, StringComparison.Ordinal);
        }
        finally
        {
            await host.StopAsync();
            host.Dispose();
        }
    }

    public static StreamTopology CountTopology()
    {
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("orders");
        return builder.Build();
    }
}

public sealed class LongNameTests
{
    [Fact]
    public async Task InMemory_ANameTooLongForItsCheckpointKeys_IsRefusedWhenTheProcessorIsCreated() =>
        await LongNameScenario.RunAsync(_ => { });

    [Fact]
    public void AStreamRegisteredUnderANameTooLongForItsCheckpointKeys_IsRefusedAtRegistration()
    {
        var services = new ServiceCollection();

        var refused = Assert.ThrowsAny<ArgumentException>(() => services.AddHerald(h =>
            h.AddStream(new string('n', LongNameScenario.LongestName + 1), s => s.Stream<Order>().GroupBy(o => o.ProductId).Count("orders"))));

        Assert.Equal("name", refused.ParamName);
        Assert.Contains($"at most {LongNameScenario.LongestName} characters", refused.Message, StringComparison.Ordinal);
    }

    /// <summary>With partitions and stages the longest key is the fence of the last partition's last stage.</summary>
    [Fact]
    public async Task ANameTooLongForTheKeysOfItsPartitionsAndStages_IsRefused()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("per-product").ToStream().GroupBy(count => count).Count("products-per-count");
        var topology = builder.Build();
        Assert.True(topology.StageCount > 1, "the topology must re-key into a second stage");
        var options = new StreamProcessorOptions { Partitions = 12 };

        // "$stream-leader:stream:" + name + ":11:stage-1"
        var longest = LongNameScenario.LongestName - ":11:stage-1".Length;
        _ = new StreamProcessor(new string('n', longest), topology, host.Services, options);
        var refused = Assert.ThrowsAny<ArgumentException>(() => new StreamProcessor(new string('n', longest + 1), topology, host.Services, options));

        Assert.Equal("name", refused.ParamName);
        Assert.Contains($"at most {longest} characters", refused.Message, StringComparison.Ordinal);
        await host.StopAsync();
    }
}

public sealed class SqliteLongNameTests : IDisposable
{
    private readonly string _file = TestSqlite.NewFile("long-name");

    [Fact]
    public async Task Sqlite_ANameTooLongForItsCheckpointKeys_IsRefusedWhenTheProcessorIsCreated() =>
        await LongNameScenario.RunAsync(h => h.UseSqlite(_file).UseSqliteStreamState());

    public void Dispose() => TestSqlite.Delete(_file);
}

public sealed class PostgresLongNameTests : IAsyncLifetime
{
    private readonly string _schema = TestPostgres.NewSchema();

    [Fact]
    public async Task Postgres_ANameTooLongForItsCheckpointKeys_IsRefusedWhenTheProcessorIsCreated() =>
        await LongNameScenario.RunAsync(h => h.UsePostgres(TestPostgres.ConnectionString, o => o.Schema = _schema).UsePostgresStreamState());

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => TestPostgres.DropAsync(_schema);
}
