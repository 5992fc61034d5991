using Herald.AmazonSqs.Transport;
using Herald.Kafka.Transport;
using Herald.RabbitMQ.Transport;
using Herald.Nats.Transport;
using Herald.Postgres.Transport;
using Herald.RabbitMQ;
using Herald.Sqlite.Transport;
using Herald.Transport;
using Herald.Transport.ConsumerChild;

// Usage: Herald.Transport.ConsumerChild <sqlite|postgres|rabbitmq|nats|sqs|kafka> <connection> <queue> [options] (see ChildArguments)
// Consumes one queue until stdin reads "stop" or closes, then stops the consumer, disposes the transport and exits 0. With
// --gate, handlers wait until stdin reads "go".
// Stdout is the protocol, one line each, written and flushed before the next step:
//   ready           the consumer is started
//   gated <id>      with --gate: a handler has the message and waits for "go" on stdin before completing it
//   complete <id>   the message's work is done; written before its ack, so it is the "completion" the tests count
//   acked <id>      the ack returned (for the SQL queues: the row is deleted, so the message can never come back)
//   holding <id>    with --hold-after: completed, and the ack is withheld until the process is killed
//   stopped <n>     stopped cleanly after n completions
// The transport's warnings go to stderr.
if (ChildArguments.Parse(args) is not { } arguments)
{
    await Console.Error.WriteLineAsync(ChildArguments.Usage);
    return 2;
}

// Console.Out is synchronized and flushes every write: a line the parent reads was written before what follows it.
var output = Console.Out;
var completions = 0;
var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
if (!arguments.Gate)
{
    gate.SetResult();
}

using var loggers = new StandardErrorLoggerFactory();
await using var transport = await OpenAsync(arguments, loggers);
var options = new ConsumerOptions { MaxConcurrency = arguments.Concurrency, Prefetch = Math.Max(arguments.Prefetch, arguments.Concurrency) };
await using var consumer = await transport.ConsumeAsync(arguments.Queue, options, async (delivery, cancellationToken) =>
{
    var id = delivery.Envelope.MessageId;
    if (!gate.Task.IsCompleted)
    {
        output.WriteLine("gated " + id);
        await gate.Task.WaitAsync(cancellationToken);
    }

    // Work of random length, so the two processes' claims, completions and acks interleave differently on every run.
    await WorkAsync();
    var completion = Interlocked.Increment(ref completions);
    output.WriteLine("complete " + id);
    if (completion > arguments.HoldAfter)
    {
        output.WriteLine("holding " + id);
        await Task.Delay(Timeout.Infinite, cancellationToken);
    }

    await WorkAsync();
    await delivery.AckAsync(cancellationToken);
    output.WriteLine("acked " + id);
});
output.WriteLine("ready");

// Reading stdin blocks a thread; the consumer runs on the pool meanwhile.
await Task.Run(() =>
{
    string? line;
    while ((line = Console.In.ReadLine()?.Trim()) is not null and not "stop")
    {
        if (line == "go")
        {
            gate.TrySetResult();
        }
    }
});

// Held handlers wait forever: past this deadline they are cancelled and their messages handed back.
using (var abort = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
{
    await consumer.StopAsync(abort.Token);
}

output.WriteLine("stopped " + Volatile.Read(ref completions));
return 0;

static async Task<ITransport> OpenAsync(ChildArguments arguments, StandardErrorLoggerFactory loggers)
{
    switch (arguments.Kind)
    {
        case "sqlite":
            return await SqliteQueueTransportFactory.OpenAsync(arguments.Connection, o =>
            {
                o.LeaseDuration = arguments.Lease ?? o.LeaseDuration;
                o.PollInterval = arguments.Poll ?? o.PollInterval;
            }, loggerFactory: loggers);
        case "postgres":
            return await PostgresQueueTransportFactory.CreateAsync(arguments.Connection, o =>
            {
                o.Schema = arguments.Schema ?? o.Schema;
                o.LeaseDuration = arguments.Lease ?? o.LeaseDuration;
                o.PollInterval = arguments.Poll ?? o.PollInterval;
                o.LoggerFactory = loggers;
            });
        case "nats":
            // The lease is the ack wait: the server hands a dead process's unacked messages to the other after it.
            return await NatsTransportFactory.CreateAsync(
                new NatsTransportOptions { Url = arguments.Connection, ClientName = arguments.Queue, AckWait = arguments.Lease ?? TimeSpan.FromSeconds(30) },
                loggerFactory: loggers);
        case "sqs":
            var sqs = new AmazonSqsTransportOptions { Credentials = new Amazon.Runtime.BasicAWSCredentials("herald-test", "herald-test") };
            sqs.ClientConfig.ServiceURL = arguments.Connection;
            sqs.ClientConfig.AuthenticationRegion = "us-east-1";
            sqs.VisibilityTimeout = arguments.Lease ?? sqs.VisibilityTimeout;
            return await AmazonSqsTransportFactory.CreateAsync(sqs, loggerFactory: loggers);
        case "kafka":
            // The queue is a topic consumed by the group {queue} (no prefix), the same group in both processes. Revocation
            // waits as in the Kafka tests: a handler still running after it is cancelled and its record goes to the new owner.
            return await KafkaTransportFactory.CreateAsync(
                new KafkaTransportOptions
                {
                    BootstrapServers = arguments.Connection,
                    GroupProtocol = arguments.KafkaMock ? KafkaGroupProtocol.Consumer : KafkaGroupProtocol.Classic,
                    CreateTopics = !arguments.KafkaMock,
                    TopicPartitions = 4,
                    ReplicationFactor = arguments.KafkaMock ? (short)-1 : (short)1,
                    CommitInterval = TimeSpan.FromMilliseconds(100),
                    RevocationTimeout = TimeSpan.FromSeconds(10),
                },
                loggerFactory: loggers);
        default:
            return await RabbitMqTransportFactory.CreateAsync(
                new RabbitMqTransportOptions { ConnectionUri = new Uri(arguments.Connection), ClientProvidedName = arguments.Queue },
                loggerFactory: loggers);
    }
}

static async Task WorkAsync()
{
    for (var i = Random.Shared.Next(16); i > 0; i--)
    {
        await Task.Yield();
    }
}
