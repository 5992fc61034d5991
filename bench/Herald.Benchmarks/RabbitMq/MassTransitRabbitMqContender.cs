using MassTransit;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>The message MassTransit sends: the same 300-byte payload as a typed object.</summary>
internal sealed record OrderPlaced(Guid OrderId, string Payload);

/// <summary>MassTransit 8's RabbitMQ transport: Send to a queue endpoint, a handler on a receive endpoint connected for the consume phase.</summary>
internal sealed class MassTransitRabbitMqContender(Uri broker) : IBrokerContender
{
    private static readonly string Payload = System.Text.Encoding.UTF8.GetString(BrokerWorkload.Body.Span);

    private IBusControl? _bus;

    public string Name => "MassTransit";

    public string Setup =>
        $"MassTransit.RabbitMQ 8.5.12, `Bus.Factory.CreateUsingRabbitMq` (publisher confirmation on, the default; persistent), {BrokerWorkload.Outstanding} concurrent `Send` to `queue:` endpoint " +
        $"of a record carrying the same 300-byte payload (MassTransit's JSON envelope makes the body larger); receive endpoint connected per consume phase with `PrefetchCount = {BrokerWorkload.Prefetch}`, " +
        $"`ConcurrentMessageLimit = {BrokerWorkload.ConsumerConcurrency}`, a handler that only counts (acked on return)";

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
        await BrokerWorkload.RunConcurrentlyAsync(count, outstanding, (_, ct) => endpoint.Send(new OrderPlaced(Guid.CreateVersion7(), Payload), ct), cancellationToken);
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
