using System.Globalization;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Diagnostics;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.AmazonSqs.Transport;

/// <summary>
/// The transport on Amazon SQS. A queue is an SQS queue (with a dead-letter queue behind a redrive policy); a topic is a list
/// of bound queues kept in the tags of a queue of its own, and a publish sends to each (SQS has no fan-out without SNS, which
/// this package does not use). Consumers run on the shared leased-queue consumer: the visibility timeout is the lease.
/// Sends and deletes on one queue share batch calls; queue URLs are resolved once and cached.
/// </summary>
internal sealed partial class AmazonSqsTransport : ITransport
{
    /// <summary>Kept off the 12-hour visibility limit, which SQS counts from its own receive time.</summary>
    internal static readonly TimeSpan VisibilityMargin = TimeSpan.FromMinutes(1);

    /// <summary>The longest <c>DelaySeconds</c> SQS takes on a send.</summary>
    internal static readonly TimeSpan MaxDelaySeconds = TimeSpan.FromMinutes(15);

    /// <summary>
    /// The longest delay a send takes (as on NATS): a longer one is chained 15 minutes at a time for that long, which no
    /// real schedule needs and a due time at the end of the calendar (a "never" by mistake) turns into a loop forever.
    /// </summary>
    internal static readonly TimeSpan MaxDelay = TimeSpan.FromDays(365);

    private readonly bool _ownsClient;
    private readonly SqsBatcher<SendMessageBatchRequestEntry> _sends;
    private readonly SqsBatcher<string> _deletes;
    private readonly LeasedQueueConsumers<SqsMessage> _consumers;
    private int _disposed;

    public AmazonSqsTransport(AmazonSqsTransportOptions options, TimeProvider timeProvider, ILoggerFactory loggerFactory)
    {
        var problems = new OptionsProblems(typeof(AmazonSqsTransportOptions));
        options.Check(problems);
        problems.ThrowFirstAsArgumentException();
        Options = options;
        TimeProvider = timeProvider;
        Logger = loggerFactory.CreateLogger("Herald.AmazonSqs");
        Names = new AmazonSqsNames(options);
        if (options.Client is { } client)
        {
            Client = client;
        }
        else
        {
            Client = options.Credentials is null ? new AmazonSQSClient(options.ClientConfig) : new AmazonSQSClient(options.Credentials, options.ClientConfig);
            _ownsClient = true;
        }

        // SQS refuses a whole SendMessageBatch whose messages add up to more than its payload limit (BatchRequestTooLong):
        // a batch holds at most what one message may (256 KiB, the limit on AWS before 2025; 1 MiB since).
        _sends = new SqsBatcher<SendMessageBatchRequestEntry>(FlushSendsAsync, SqsMaxMessageBytes);
        _deletes = new SqsBatcher<string>(FlushDeletesAsync);
        _consumers = new LeasedQueueConsumers<SqsMessage>(new LeasedQueueSettings
        {
            LeaseDuration = options.VisibilityTimeout,

            // A long poll returns when a message arrives; without one, a short poll every half second.
            PollInterval = options.WaitTime > TimeSpan.Zero ? TimeSpan.Zero : TimeSpan.FromMilliseconds(500),
            MaxClaim = SqsBatcher<SqsMessage>.MaxBatch,

            // A receive is a round trip: a busy consumer receives once half its room is free.
            ClaimsInBatches = true,
            StartsOnlyUnderASafeLease = true,

            // SQS applies a stale receipt handle to the message's current delivery: a late delete or visibility change
            // would end or expose another consumer's.
            SettlesOnlyUnderItsLease = true,

            // Not RenewsUntilSettled: a visibility change is no guarded statement, so a renewal landing after a nack would
            // replace the nack's delay; a settled message leaves the renewals first.
            TimeProvider = timeProvider,
            Logger = Logger,
            Name = "SQS queue",
        });
        Capabilities = new TransportCapabilities
        {
            IsDurable = true,
            SupportsDelayedDelivery = true,

            // Standard queues deliver in no particular order. FIFO queues keep the order of a message group on AWS, but this
            // consumer hands a received batch to several handlers at once, so it promises no order per key either way.
            PreservesOrderPerPartitionKey = false,
            SupportsNativeDeadLetter = true,
            MaxMessageBytes = options.MaxMessageBytes,
            MaxNameBytes = Names.MaxNameBytes,

            // Delays beyond SQS's own limits are chained (docs/sqs.md), up to a year.
            MaxDelay = MaxDelay,
            IsPermanentSendFailure = IsPermanent,
        };
    }

    /// <inheritdoc />
    public string Name => "sqs";

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    public AmazonSqsTransportOptions Options { get; }

    public TimeProvider TimeProvider { get; }

    public ILogger Logger { get; }

    public IAmazonSQS Client { get; }

    public AmazonSqsNames Names { get; }

    /// <summary>Checks that SQS answers with these settings (one <c>ListQueues</c> call), so a wrong endpoint fails the start.</summary>
    public async Task ConnectAsync(CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        try
        {
            await Client.ListQueuesAsync(new ListQueuesRequest { QueueNamePrefix = Options.QueueNamePrefix.Length > 0 ? Options.QueueNamePrefix : null, MaxResults = 1 }, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            throw new HeraldException($"Amazon SQS at {Describe()} did not answer: {e.Message}", e);
        }

        AdapterLog.Connected(Logger, "Amazon SQS", Describe());
    }

    /// <inheritdoc />
    public async ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default)
    {
        Names.Validate(queue, nameof(queue));
        var url = await QueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);

        // The health check's probe: sends answer from the cached URL, this asks SQS about the queue each time.
        try
        {
            await ArnAsync(url, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (ForgetIfGone(queue, e))
        {
            throw;
        }
    }

    /// <inheritdoc />
    public async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        Names.Validate(queue, nameof(queue));
        CheckSend(envelope, options);
        await SendToQueueAsync(queue, envelope, options?.Delay ?? TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        Names.Validate(queue, nameof(queue));
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        options.Validate();
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        var url = await QueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);
        SqsQueueGauges.Watch(this, queue, url);
        var backend = new SqsQueueBackend(this, queue, url);
        return _consumers.Start(backend, backend.Name, queue, options, handler);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        SqsQueueGauges.Forget(this);
        await _consumers.DisposeAllAsync().ConfigureAwait(false);
        await _sends.DisposeAsync().ConfigureAwait(false);
        await _deletes.DisposeAsync().ConfigureAwait(false);
        if (_ownsClient)
        {
            Client.Dispose();
        }
    }

    internal DateTimeOffset Now() => TimeProvider.GetUtcNow();

    /// <summary>Sends a copy of a received message with the attempts so far (a redelivery, a held-back delay or a dead letter).</summary>
    internal Task SendCopyAsync(string queueUrl, Envelope envelope, int attemptsBefore, TimeSpan delay, string? reason, CancellationToken cancellationToken) =>
        SendAsync(queueUrl, envelope, attemptsBefore, delay, due: null, reason, copy: true, cancellationToken);

    /// <summary>
    /// Sends a copy of a message received before <paramref name="due"/>, carrying that due time as it was: re-adding the rest
    /// of the delay to the clock drifted, and overflowed on a due time at the end of the calendar. Not cancellable: the
    /// caller deletes the original after it, whatever happens meanwhile.
    /// </summary>
    internal Task SendHeldBackCopyAsync(string queueUrl, Envelope envelope, int attemptsBefore, DateTimeOffset due) =>
        SendAsync(queueUrl, envelope, attemptsBefore, due - Now(), due, reason: null, copy: true, CancellationToken.None);

    /// <summary>Deletes a received message (batched); false when its receipt is no longer valid (another receive took it).</summary>
    internal Task<bool> DeleteAsync(string queueUrl, string receiptHandle) => _deletes.RunAsync(queueUrl, receiptHandle);

    /// <summary>Hides a received message for <paramref name="delay"/> (whole seconds, rounded up); false when its receipt is no longer valid.</summary>
    internal async Task<bool> ChangeVisibilityAsync(string queueUrl, string receiptHandle, TimeSpan delay, CancellationToken cancellationToken)
    {
        try
        {
            await Client.ChangeMessageVisibilityAsync(
                new ChangeMessageVisibilityRequest { QueueUrl = queueUrl, ReceiptHandle = receiptHandle, VisibilityTimeout = Seconds(delay) },
                cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (AmazonSQSException e) when (IsLostReceipt(e.ErrorCode) || e is ReceiptHandleIsInvalidException or MessageNotInflightException)
        {
            return false;
        }
    }

    /// <summary>True for the error codes of a receipt that no longer holds its message.</summary>
    internal static bool IsLostReceipt(string? code) =>
        code is "ReceiptHandleIsInvalid" or "MessageNotInflight" or "AWS.SimpleQueueService.MessageNotInflight" or "InvalidParameterValue";

    internal static int Seconds(TimeSpan delay) => delay <= TimeSpan.Zero ? 0 : (int)Math.Ceiling(delay.TotalSeconds);

    /// <summary>
    /// Sends one message: a delay within SQS's 15 minutes as <c>DelaySeconds</c> (standard queues), a longer one (or any on a
    /// FIFO queue, which has no per-message delay) as a due time the consumer holds it back until, hop by hop:
    /// <paramref name="due"/> when given, else now + <paramref name="delay"/> (at most the end of the calendar).
    /// </summary>
    private async Task SendAsync(string queueUrl, Envelope envelope, int attemptsBefore, TimeSpan delay, DateTimeOffset? due, string? reason, bool copy, CancellationToken cancellationToken)
    {
        DateTimeOffset? carriedDue = null;
        var delaySeconds = 0;
        if (delay > TimeSpan.Zero)
        {
            if (Options.FifoQueues || delay > MaxDelaySeconds)
            {
                var now = Now();
                carriedDue = due ?? (delay < DateTimeOffset.MaxValue - now ? now + delay : DateTimeOffset.MaxValue);
            }

            delaySeconds = Options.FifoQueues ? 0 : Seconds(delay < MaxDelaySeconds ? delay : MaxDelaySeconds);
        }

        var (body, attributes) = SqsEnvelopeCodec.Encode(envelope, Options.Source, new SqsEnvelopeCodec.Carried(attemptsBefore, carriedDue, reason));
        var size = SqsEnvelopeCodec.SizeOf(body, attributes);
        if (size > SqsMaxMessageBytes)
        {
            throw new MessageTooLargeException(envelope.MessageType, size, SqsMaxMessageBytes);
        }

        var entry = new SendMessageBatchRequestEntry
        {
            MessageBody = body,
            MessageAttributes = attributes,
            DelaySeconds = delaySeconds > 0 ? delaySeconds : null,
        };
        if (Options.FifoQueues)
        {
            // Unkeyed messages get a group of their own: no order among them is promised, so none holds up another.
            entry.MessageGroupId = string.IsNullOrEmpty(envelope.PartitionKey) ? envelope.MessageId.ToString("N") : GroupId(envelope.PartitionKey);

            // The message id deduplicates sends; a copy of a received one is a new send of it and must not be taken for one,
            // nor a send at attempt 0, a re-send on purpose (a dead letter retried keeps its id, as on NATS).
            entry.MessageDeduplicationId = copy || envelope.DeliveryAttempt == 0
                ? string.Create(CultureInfo.InvariantCulture, $"{envelope.MessageId:N}-{attemptsBefore}-{Now().ToUnixTimeMilliseconds()}")
                : envelope.MessageId.ToString("N");
        }

        await _sends.RunAsync(queueUrl, entry, size).WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The message group of a partition key: the key itself when SQS takes it (1 to 128 ASCII letters, digits and
    /// punctuation), else a hash of it, so a key with a space, another letter or more characters is not refused for good
    /// and its messages still share a group (the key travels in <c>ce_partitionkey</c> as it was).
    /// </summary>
    internal static string GroupId(string partitionKey)
    {
        if (partitionKey.Length <= 128 && !partitionKey.AsSpan().ContainsAnyExceptInRange('!', '~'))
        {
            return partitionKey;
        }

        Span<byte> hash = stackalloc byte[32];
        System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(partitionKey), hash);
        return "herald-key-" + Convert.ToHexStringLower(hash);
    }

    /// <summary>SQS's limit on one message, body and attributes together.</summary>
    private const int SqsMaxMessageBytes = 256 * 1024;

    private async Task FlushSendsAsync(string queueUrl, IReadOnlyList<SqsBatcher<SendMessageBatchRequestEntry>.Pending> batch, CancellationToken cancellationToken)
    {
        if (batch.Count == 1)
        {
            var entry = batch[0].Entry;
            await Client.SendMessageAsync(
                new SendMessageRequest
                {
                    QueueUrl = queueUrl,
                    MessageBody = entry.MessageBody,
                    MessageAttributes = entry.MessageAttributes,
                    DelaySeconds = entry.DelaySeconds,
                    MessageGroupId = entry.MessageGroupId,
                    MessageDeduplicationId = entry.MessageDeduplicationId,
                },
                cancellationToken).ConfigureAwait(false);
            batch[0].Done.TrySetResult(true);
            return;
        }

        var entries = new List<SendMessageBatchRequestEntry>(batch.Count);
        for (var i = 0; i < batch.Count; i++)
        {
            var entry = batch[i].Entry;
            entry.Id = i.ToString(CultureInfo.InvariantCulture);
            entries.Add(entry);
        }

        var response = await Client.SendMessageBatchAsync(new SendMessageBatchRequest { QueueUrl = queueUrl, Entries = entries }, cancellationToken).ConfigureAwait(false);
        foreach (var ok in response.Successful ?? [])
        {
            batch[int.Parse(ok.Id, CultureInfo.InvariantCulture)].Done.TrySetResult(true);
        }

        foreach (var failed in response.Failed ?? [])
        {
            batch[int.Parse(failed.Id, CultureInfo.InvariantCulture)].Done.TrySetException(
                new AmazonSQSException($"SQS refused a message sent to {queueUrl}: {failed.Code} {failed.Message}") { ErrorCode = failed.Code });
        }
    }

    private async Task FlushDeletesAsync(string queueUrl, IReadOnlyList<SqsBatcher<string>.Pending> batch, CancellationToken cancellationToken)
    {
        if (batch.Count == 1)
        {
            try
            {
                await Client.DeleteMessageAsync(new DeleteMessageRequest { QueueUrl = queueUrl, ReceiptHandle = batch[0].Entry }, cancellationToken).ConfigureAwait(false);
                batch[0].Done.TrySetResult(true);
            }
            catch (AmazonSQSException e) when (IsLostReceipt(e.ErrorCode) || e is ReceiptHandleIsInvalidException)
            {
                batch[0].Done.TrySetResult(false);
            }

            return;
        }

        var entries = new List<DeleteMessageBatchRequestEntry>(batch.Count);
        for (var i = 0; i < batch.Count; i++)
        {
            entries.Add(new DeleteMessageBatchRequestEntry { Id = i.ToString(CultureInfo.InvariantCulture), ReceiptHandle = batch[i].Entry });
        }

        var response = await Client.DeleteMessageBatchAsync(new DeleteMessageBatchRequest { QueueUrl = queueUrl, Entries = entries }, cancellationToken).ConfigureAwait(false);
        foreach (var ok in response.Successful ?? [])
        {
            batch[int.Parse(ok.Id, CultureInfo.InvariantCulture)].Done.TrySetResult(true);
        }

        foreach (var failed in response.Failed ?? [])
        {
            var pending = batch[int.Parse(failed.Id, CultureInfo.InvariantCulture)];
            if (IsLostReceipt(failed.Code))
            {
                pending.Done.TrySetResult(false);
            }
            else
            {
                pending.Done.TrySetException(new AmazonSQSException($"SQS refused to delete a message of {queueUrl}: {failed.Code} {failed.Message}") { ErrorCode = failed.Code });
            }
        }
    }

    private void CheckSend(Envelope envelope, SendOptions? options)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (envelope.Body.Length > Options.MaxMessageBytes)
        {
            throw new MessageTooLargeException(envelope.MessageType, envelope.Body.Length, Options.MaxMessageBytes);
        }

        TransportArguments.ThrowIfDelayTooLong(options, MaxDelay);
    }

    /// <summary>A send SQS refuses for what the message is (a bad attribute, too large) fails every retry the same way.</summary>
    private static bool IsPermanent(Exception exception) =>
        exception is AmazonSQSException { ErrorCode: "InvalidParameterValue" or "InvalidMessageContents" or "InvalidAttributeName" or "InvalidAttributeValue" };

    private string Describe() => Options.Client is not null ? "the given client" : Options.ClientConfig.ServiceURL ?? Options.ClientConfig.RegionEndpoint?.SystemName ?? "the default endpoint";
}
