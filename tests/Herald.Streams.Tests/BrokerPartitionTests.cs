using Herald.Internal;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams.Tests;

/// <summary>
/// Issue 15 (scale): a transport-source stream on a key-partitioned broker keeps its state per broker partition, loads it
/// when the partition is assigned, commits nothing for it once revoked, and reloads it when the partition comes back.
/// </summary>
public sealed class BrokerPartitionTests : IDisposable
{
    private const string Queue = "clicks-endpoint";
    private readonly string _file = TestSqlite.NewFile("broker");

    public void Dispose() => TestSqlite.Delete(_file);

    [Fact]
    public async Task BrokerPartition_RevokedThenAssignedAgain_RefusesMeanwhileAndReloadsTheCommittedState()
    {
        using var host = await ProcessorScenario.StartHostAsync(h => h.UseSqlite(_file).UseSqliteStreamState());
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupByKey().Count("counts");
        await using var processor = new StreamProcessor("broker", builder.Build(), host.Services, new StreamProcessorOptions { Source = StreamSource.Transport });
        await processor.StartAsync();

        var first = new BrokerPartition("orders", 2, 1);
        processor.OnBrokerAssigned(Queue, [first]);
        await processor.ProcessFromAsync(ProcessorScenario.OrderAt(0), "k", DateTimeOffset.UnixEpoch, first, Queue, default);
        await processor.ProcessFromAsync(ProcessorScenario.OrderAt(1), "k", DateTimeOffset.UnixEpoch, first, Queue, default);
        Assert.Equal([2], processor.OwnedPartitions);
        Assert.Equal(2L, await processor.QueryAsync<string, long>("counts", "k"));

        // Another process owns it now: this one refuses its messages and answers nothing for it.
        processor.OnBrokerRevoked(Queue, [first]);
        await Assert.ThrowsAsync<StreamPartitionNotOwnedException>(
            () => processor.ProcessFromAsync(ProcessorScenario.OrderAt(2), "k", DateTimeOffset.UnixEpoch, first, Queue, default).AsTask());
        Assert.Empty(processor.OwnedPartitions);

        // What the other owner committed meanwhile is in the store; coming back, this process reads it instead of its memory.
        var state = host.Services.GetRequiredService<IStreamStateStore>();
        await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(
            async (services, token) => await state.WriteAsync("broker:b2", [new StateChange("counts", "\"k\"", "5")], services.GetRequiredService<IUnitOfWork>(), token),
            cancellationToken: default);
        var again = new BrokerPartition("orders", 2, 7);
        processor.OnBrokerAssigned(Queue, [again]);
        await processor.ProcessFromAsync(ProcessorScenario.OrderAt(3), "k", DateTimeOffset.UnixEpoch, again, Queue, default);
        Assert.Equal(6L, await processor.QueryAsync<string, long>("counts", "k"));

        // A delivery of the old assignment (abandoned there) is refused, not applied to the new one's state.
        await Assert.ThrowsAsync<StreamPartitionNotOwnedException>(
            () => processor.ProcessFromAsync(ProcessorScenario.OrderAt(4), "k", DateTimeOffset.UnixEpoch, first, Queue, default).AsTask());
        Assert.Equal(6L, await processor.QueryAsync<string, long>("counts", "k"));
        await host.StopAsync();
    }

    [Fact]
    public async Task BrokerPartition_RecordRekeyedBeforeState_IsRefused()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("counts");
        await using var processor = new StreamProcessor("rekeyed", builder.Build(), host.Services, new StreamProcessorOptions { Source = StreamSource.Transport });
        await processor.StartAsync();
        var partition = new BrokerPartition("orders", 0, 1);
        processor.OnBrokerAssigned(Queue, [partition]);

        var order = ProcessorScenario.OrderAt(0);
        var error = await Assert.ThrowsAsync<StreamKeyException>(
            () => processor.ProcessFromAsync(order, "some-other-key", DateTimeOffset.UnixEpoch, partition, Queue, default).AsTask());
        Assert.Contains("some-other-key", error.Message, StringComparison.Ordinal);

        // Published with the key it is grouped by, it counts.
        await processor.ProcessFromAsync(order, order.ProductId, DateTimeOffset.UnixEpoch, partition, Queue, default);
        Assert.Equal(1L, await processor.QueryAsync<string, long>("counts", order.ProductId));
        await host.StopAsync();
    }
}
