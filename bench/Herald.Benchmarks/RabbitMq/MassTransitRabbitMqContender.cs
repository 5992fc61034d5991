using MassTransit;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>MassTransit 8's RabbitMQ transport: Send to a queue endpoint, a handler on a receive endpoint connected for the consume phase.</summary>
internal sealed class MassTransitRabbitMqContender(Uri broker) : IBrokerContender
{
    private IBusControl? _bus;

    /// <summary>The contender's name.</summary>
    public const string ContenderName = "MassTransit";

    public string Name => ContenderName;

    public string Setup =>
        $"MassTransit.RabbitMQ 8.5.12, `Bus.Factory.CreateUsingRabbitMq` (publisher confirmation on, the default; persistent), {BrokerWorkload.Outstanding} concurrent `Send` to `queue:` endpoint " +
        $"of the same message as a record (its JSON is the 300 bytes the others send; MassTransit's envelope makes the body larger); receive endpoint connected per consume phase with `PrefetchCount = {BrokerWorkload.Prefetch}`, " +
        $"`ConcurrentMessageLimit = {BrokerWorkload.ConsumerConcurrency}`, a handler of the deserialized message that counts (acked on return, one `basic.ack` per message)";

    private IBusControl Bus => _bus ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _bus = MassTransit.Bus.Factory.CreateUsingRabbitMq(cfg =>
        {
            cfg.Host(broker, h => h.PublisherConfirmation = true);
        });
        await _bus.StartAsync(cancellationToken);
    }

    public async Task PublishAsync(string queue, int count, int outstanding, CancellationToken cancellationToken)
    {
        var endpoint = await Bus.GetSendEndpoint(new Uri($"queue:{queue}"));
        await BrokerWorkload.RunConcurrentlyAsync(count, outstanding, (_, ct) => endpoint.Send(BrokerWorkload.Message with { OrderId = Guid.CreateVersion7() }, ct), cancellationToken);
    }

    public async Task<IAsyncDisposable> ConsumeAsync(string queue, int count, CancellationToken cancellationToken)
    {
        var received = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var handle = Bus.ConnectReceiveEndpoint(queue, e =>
        {
            if (e is IRabbitMqReceiveEndpointConfigurator rabbit)
            {
                rabbit.PrefetchCount = BrokerWorkload.Prefetch;
            }

            e.ConcurrentMessageLimit = BrokerWorkload.ConsumerConcurrency;
            e.ConfigureConsumeTopology = false;
            e.Handler<OrderPlaced>(_ =>
            {
                if (Interlocked.Increment(ref received) == count)
                {
                    done.TrySetResult();
                }

                return Task.CompletedTask;
            });
        });
        try
        {
            await handle.Ready.WaitAsync(cancellationToken);
            await BrokerWorkload.WaitAsync(done.Task, Name, () => Volatile.Read(ref received), count, cancellationToken);
        }
        catch
        {
            await handle.StopAsync(cancellationToken);
            throw;
        }

        return new StopOnDispose(async () => await handle.StopAsync(cancellationToken));
    }

    public async ValueTask DisposeAsync()
    {
        if (_bus is not null)
        {
            await _bus.StopAsync();
        }
    }
}
