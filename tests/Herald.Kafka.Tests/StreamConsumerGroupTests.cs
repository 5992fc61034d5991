using Herald.Conformance;
using Herald.Handling;
using Herald.Streams;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// Issue 15 (scale): a transport-source stream shared by the hosts of one consumer group. Each host holds some of the
/// topic's partitions and keeps the state of those; a rebalance moves a partition's state with it (loaded from the shared
/// PostgreSQL state store when the partition is assigned, dropped when it is revoked), so the windows equal those one
/// process computes: nothing lost, nothing counted twice.
/// </summary>
public sealed class StreamConsumerGroupTests(ITestOutputHelper output) : KafkaTestBase
{
    private const int Records = 2400;
    private const int Keys = 12;

    private static readonly string ConnectionString =
        Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } configured
            ? configured
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

    private readonly string _schema = "herald_kafka_streams_" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _endpoint = Name("stream-group");
    private readonly string _type = Name("click");

    [Fact]
    public async Task TwoHostsOfOneGroup_HostLeavesMidRun_WindowsEqualOneProcessComputation()
    {
        var start = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var clicks = Enumerable.Range(0, Records)
            .Select(i => (Key: $"user-{i * 7 % Keys}", Click: new Click(start.AddSeconds(i * 3))))
            .ToList();
        var expected = clicks
            .GroupBy(c => (c.Key, Window: Minute(c.Click.At)))
            .ToDictionary(g => g.Key, g => (long)g.Count());

        // B holds every partition at first; A joins (B gives some up, A loads their state) and leaves mid-run (B takes them
        // back and must reload what A committed for them).
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var b = await StartHostAsync();
        var bus = b.Services.GetRequiredService<IMessageBus>();
        var third = Records / 3;
        await PublishAsync(bus, clicks[..third]);

        var a = await StartHostAsync();
        var aStream = a.Services.GetRequiredService<StreamProcessors>()["clicks"];
        try
        {
            await Eventually.UntilAsync(() => aStream.OwnedPartitions.Count > 0, "the joining host is given partitions", TimeSpan.FromSeconds(90));
            output.WriteLine($"{clock.Elapsed}: the joining host holds partitions [{string.Join(",", aStream.OwnedPartitions)}]");
            await PublishAsync(bus, clicks[third..(2 * third)]);
            await Eventually.UntilAsync(
                async () => (await CountsAsync(aStream)).Count > 0,
                "the joining host counts records of its partitions",
                TimeSpan.FromSeconds(90));
            output.WriteLine($"{clock.Elapsed}: the joining host counts; it leaves");

            // Leaves while records are still coming.
            await Task.WhenAll(a.StopAsync(), PublishAsync(bus, clicks[(2 * third)..]));
        }
        finally
        {
            await a.StopAsync();
            a.Dispose();
        }

        var stream = b.Services.GetRequiredService<StreamProcessors>()["clicks"];
        output.WriteLine($"{clock.Elapsed}: the joining host stopped; the remaining host holds partitions [{string.Join(",", stream.OwnedPartitions)}]");
        Dictionary<(string, DateTimeOffset), long> counted = [];
        await Eventually.UntilAsync(
            async () =>
            {
                counted = await CountsAsync(stream);
                return counted.Count == expected.Count && counted.All(c => expected.GetValueOrDefault(c.Key) == c.Value);
            },
            "the remaining host's windows equal the one-process result",
            TimeSpan.FromSeconds(300)).ContinueWith(
                t => t.IsFaulted ? throw new Xunit.Sdk.XunitException($"Counted {counted.Values.Sum()} clicks in {counted.Count} windows; expected {Records} in {expected.Count}. The remaining host holds partitions [{string.Join(",", stream.OwnedPartitions)}]; the group has {Uncommitted(_type, _endpoint)} records not committed.", t.Exception) : t,
                TaskScheduler.Default).Unwrap();

        output.WriteLine($"{clock.Elapsed}: the remaining host's windows equal the one-process result");

        // Once the group committed every offset nothing can come again: the result still stands (nothing counted twice).
        Assert.Equal(Records, EndOffsets(_type));
        await Eventually.UntilAsync(() => Uncommitted(_type, _endpoint) == 0, "the group committed every record", TimeSpan.FromSeconds(120));
        Assert.Equal(expected.OrderBy(e => e.Key).ToList(), (await CountsAsync(stream)).OrderBy(e => e.Key).ToList());
        await b.StopAsync();
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{_schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }

    private static DateTimeOffset Minute(DateTimeOffset time) => new(time.Ticks - (time.Ticks % TimeSpan.TicksPerMinute), TimeSpan.Zero);

    private static async Task PublishAsync(IMessageBus bus, IEnumerable<(string Key, Click Click)> clicks)
    {
        foreach (var (key, click) in clicks)
        {
            await bus.PublishAsync(click, new DeliveryOptions { PartitionKey = key });
        }
    }

    private static async Task<Dictionary<(string, DateTimeOffset), long>> CountsAsync(StreamProcessor stream)
    {
        var counts = new Dictionary<(string, DateTimeOffset), long>();
        for (var key = 0; key < Keys; key++)
        {
            foreach (var (window, count) in await stream.QueryWindowsAsync<string, long>("per-minute", $"user-{key}", DateTimeOffset.MinValue, DateTimeOffset.MaxValue))
            {
                counts[(window.Key, window.Window.Start)] = count;
            }
        }

        return counts;
    }

    private async Task<IHost> StartHostAsync()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .UsePostgres(ConnectionString, o => o.Schema = _schema)
            .UsePostgresStreamState()
            .UseInbox()
            .UseKafka(ApplyTestOptions)
            .AddMessageType<Click>(_type)
            .AddStream(
                "clicks",
                s => s.Stream<Click>(c => c.At)
                    .GroupByKey()
                    .WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(1)).WithGrace(TimeSpan.FromDays(1)))
                    .Count("per-minute"),
                new StreamProcessorOptions { Source = StreamSource.Transport })
            .Configure(o => o.EndpointName = _endpoint));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    public sealed record Click(DateTimeOffset At);
}
