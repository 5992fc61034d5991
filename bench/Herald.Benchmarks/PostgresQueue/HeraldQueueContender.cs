using Herald.Messages;
using Herald.Postgres.Transport;
using Herald.Transport;
using Npgsql;

namespace Herald.Benchmarks.PostgresQueue;

/// <summary>
/// Herald's PostgreSQL queue through the ITransport port: <c>SendAsync</c> from one transport instance, then
/// <c>ConsumeAsync</c> on other instances, each with its own connection pool and LISTEN connection, as separate processes.
/// </summary>
internal sealed class HeraldQueueContender(string connectionString, NpgsqlDataSource admin) : IQueueContender
{
    private const string Queue = "orders";

    public string Name => "Herald";

    public string Setup =>
        "`PostgresQueueTransportFactory.CreateAsync(cs, o => o.Schema = fresh)`, defaults otherwise (lease 30 s, poll 5 s); " +
        $"send: one transport instance, {QueueWorkload.Senders} tasks each awaiting `SendAsync` of an `Envelope` (Guid v7 id, {QueueWorkload.MessageBytes}-byte body) before the next; " +
        "drain \"4 × 1\": 4 more transport instances (4 pools, 4 LISTEN connections) on the queue, `ConsumeAsync` with `MaxConcurrency = 1` (Prefetch 16, the default); " +
        "drain \"1 × 4\": one more instance with `MaxConcurrency = 4` (Prefetch 16); the handler awaits `AckAsync` (lease-guarded `DELETE ... WHERE id = $1 AND lease_owner = $2`, one autocommitted statement per message) and counts. " +
        "Inside the transport: concurrent sends are grouped into one multi-row `INSERT ... SELECT FROM unnest(...)` per commit (2 writer loops, up to 256 sends each), and each `SendAsync` returns after its group's commit; " +
        "a consumer leases up to MaxConcurrency + Prefetch rows per `UPDATE ... FOR UPDATE SKIP LOCKED` statement (setting lease owner and expiry), claiming again once half that room is free; " +
        "NOTIFY goes out after commits, from one coalescing notifier per instance";

    public IReadOnlyList<DrainShape> Drains { get; } = [new(4, 1), new(1, 4)];

    public async Task<IQueueRound> NewRoundAsync(CancellationToken cancellationToken)
    {
        var schema = "herald_pgq_" + Guid.NewGuid().ToString("N")[..12];
        var sender = await PostgresQueueTransportFactory.CreateAsync(connectionString, o => o.Schema = schema, cancellationToken);
        return new Round(connectionString, admin, schema, sender);
    }

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    private sealed class Round(string connectionString, NpgsqlDataSource admin, string schema, ITransport sender) : IQueueRound
    {
        public Task SendAsync(int count, int senders, CancellationToken cancellationToken) =>
            QueueWorkload.RunConcurrentlyAsync(count, senders, async ct =>
            {
                var envelope = new Envelope
                {
                    MessageId = Guid.CreateVersion7(),
                    MessageType = QueueWorkload.MessageType,
                    Time = DateTimeOffset.UtcNow,
                    Body = QueueWorkload.Body,
                };
                await sender.SendAsync(Queue, envelope, cancellationToken: ct);
            }, cancellationToken);

        public async Task<IQueueDrain> PrepareDrainAsync(DrainShape shape, CancellationToken cancellationToken)
        {
            var transports = new List<ITransport>();
            for (var i = 0; i < shape.Instances; i++)
            {
                transports.Add(await PostgresQueueTransportFactory.CreateAsync(connectionString, o => o.Schema = schema, cancellationToken));
            }

            return new Drain(transports, shape);
        }

        public async ValueTask DisposeAsync()
        {
            await sender.DisposeAsync();
            await QueueWorkload.ExecuteAsync(admin, $"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", CancellationToken.None);
        }
    }

    private sealed class Drain(List<ITransport> transports, DrainShape shape) : IQueueDrain
    {
        private readonly List<ITransportConsumer> _consumers = [];

        public async Task RunAsync(int count, CancellationToken cancellationToken)
        {
            var received = 0;
            var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var options = new ConsumerOptions { MaxConcurrency = shape.Concurrency };
            DeliveryHandler handler = async (delivery, ct) =>
            {
                await delivery.AckAsync(ct);
                if (Interlocked.Increment(ref received) == count)
                {
                    done.TrySetResult();
                }
            };

            // Started together, so no instance gets a head start on the others.
            _consumers.AddRange(await Task.WhenAll(transports.Select(t => t.ConsumeAsync(Queue, options, handler, cancellationToken).AsTask())));
            await QueueWorkload.WaitAsync(done.Task, "Herald", () => Volatile.Read(ref received), count, cancellationToken);
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var consumer in _consumers)
            {
                await consumer.DisposeAsync();
            }

            foreach (var transport in transports)
            {
                await transport.DisposeAsync();
            }
        }
    }
}
