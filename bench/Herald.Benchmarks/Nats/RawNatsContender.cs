using System.Threading.Channels;
using Herald.Benchmarks.RabbitMq;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

namespace Herald.Benchmarks.Nats;

/// <summary>
/// The bare NATS.Net 3 JetStream client, written as its documentation shows: a work-queue stream on disk per queue,
/// `PublishAsync` with a `MsgId` awaiting each publish ack, and a durable pull consumer read with `ConsumeAsync`
/// (`MaxMsgs` = the prefetch), handed to the same number of workers as Herald runs, each decoding the body and acking.
/// </summary>
/// <param name="cloudEventHeaders">
/// Publish the CloudEvents attributes Herald writes (<c>ce-specversion</c>, <c>ce-id</c>, <c>ce-type</c>, <c>ce-source</c>,
/// <c>ce-time</c>, <c>Content-Type</c>) and read them on consume (id parsed, time parsed): the raw client doing Herald's
/// wire work, so the difference to Herald is Herald alone.
/// </param>
internal sealed class RawNatsContender(string url, string streamPrefix, string subjectPrefix, bool cloudEventHeaders = false) : IBrokerContender
{
    public const string ContenderName = "NATS.Net (raw)";
    public const string WithHeadersName = "NATS.Net (raw, CloudEvents headers)";

    private NatsConnection? _connection;
    private NatsJSContext? _js;

    public string Name => cloudEventHeaders ? WithHeadersName : ContenderName;

    public string Setup =>
        "NATS.Net 3 `NatsJSContext`: a work-queue stream on disk per queue; `PublishAsync` of the 300-byte body with `MsgId` set, each awaiting its publish ack; " +
        $"a durable pull consumer (explicit ack) read with `ConsumeAsync(MaxMsgs = {BrokerWorkload.Prefetch})` into {BrokerWorkload.ConsumerConcurrency} workers that deserialize the body, then `AckAsync` (no double ack)" +
        (cloudEventHeaders ? "; the message carries the CloudEvents headers Herald writes (`ce-specversion`, `ce-id`, `ce-type`, `ce-source`, `ce-time`, `Content-Type`), and the consumer parses the id and time" : string.Empty);

    private NatsJSContext JetStream => _js ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _connection = new NatsConnection(new NatsOpts { Url = url, Name = "herald-bench-raw" });
        await _connection.ConnectAsync();
        _js = new NatsJSContext(_connection);
    }

    public async Task PublishAsync(string queue, int count, int outstanding, CancellationToken cancellationToken)
    {
        var subject = $"{subjectPrefix}.raw.{queue}";
        await JetStream.CreateStreamAsync(new StreamConfig(Stream(queue), [subject]) { Retention = StreamConfigRetention.Workqueue, Storage = StreamConfigStorage.File }, cancellationToken);
        await BrokerWorkload.RunConcurrentlyAsync(count, outstanding, async (_, ct) =>
        {
            var id = Guid.CreateVersion7().ToString("D");
            var headers = cloudEventHeaders
                ? new NatsHeaders
                {
                    ["ce-specversion"] = "1.0",
                    ["ce-id"] = id,
                    ["ce-type"] = "order-placed",
                    ["ce-source"] = "/herald",
                    ["ce-time"] = DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture),
                    ["Content-Type"] = "application/json",
                }
                : null;
            var ack = await JetStream.PublishAsync(subject, BrokerWorkload.Body, opts: new NatsJSPubOpts { MsgId = id }, headers: headers, cancellationToken: ct);
            ack.EnsureSuccess();
        }, cancellationToken);
    }

    public async Task<IAsyncDisposable> ConsumeAsync(string queue, int count, CancellationToken cancellationToken)
    {
        var consumer = await JetStream.CreateOrUpdateConsumerAsync(Stream(queue), new ConsumerConfig("raw") { AckPolicy = ConsumerConfigAckPolicy.Explicit }, cancellationToken);
        var received = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var work = Channel.CreateBounded<INatsJSMsg<byte[]>>(BrokerWorkload.Prefetch);
        var workers = Enumerable.Range(0, BrokerWorkload.ConsumerConcurrency).Select(_ => Task.Run(async () =>
        {
            await foreach (var message in work.Reader.ReadAllAsync(CancellationToken.None))
            {
                if (cloudEventHeaders && message.Headers is { } headers)
                {
                    if (Guid.Parse(headers["ce-id"].ToString()) == Guid.Empty
                        || DateTimeOffset.Parse(headers["ce-time"].ToString(), System.Globalization.CultureInfo.InvariantCulture) == default)
                    {
                        throw new InvalidOperationException("The CloudEvents headers did not come back.");
                    }
                }

                BrokerWorkload.Decode(message.Data);
                await message.AckAsync(cancellationToken: CancellationToken.None);
                if (Interlocked.Increment(ref received) == count)
                {
                    done.TrySetResult();
                }
            }
        }, CancellationToken.None)).ToArray();
        var pulling = Task.Run(async () =>
        {
            try
            {
                await foreach (var message in consumer.ConsumeAsync<byte[]>(opts: new NatsJSConsumeOpts { MaxMsgs = BrokerWorkload.Prefetch }, cancellationToken: stop.Token))
                {
                    await work.Writer.WriteAsync(message, stop.Token);
                }
            }
            catch (OperationCanceledException)
            {
            }
            finally
            {
                work.Writer.TryComplete();
            }
        }, CancellationToken.None);
        await BrokerWorkload.WaitAsync(done.Task, Name, () => Volatile.Read(ref received), count, cancellationToken);
        return new StopOnDispose(async () =>
        {
            await stop.CancelAsync();
            await pulling;
            await Task.WhenAll(workers);
            stop.Dispose();
        });
    }

    /// <summary>Deletes every stream of the run (Herald's and the raw ones), by prefix.</summary>
    public async Task DeleteStreamsAsync(CancellationToken cancellationToken)
    {
        var names = new List<string>();
        await foreach (var name in JetStream.ListStreamNamesAsync(cancellationToken: cancellationToken))
        {
            if (name.StartsWith(streamPrefix, StringComparison.Ordinal))
            {
                names.Add(name);
            }
        }

        foreach (var name in names)
        {
            await JetStream.DeleteStreamAsync(name, cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }

    private string Stream(string queue) => $"{streamPrefix}_RAW_{queue}";
}
