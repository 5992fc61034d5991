using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Transport;

namespace Herald.AmazonSqs.Tests;

/// <summary>An SQS client on the emulator that reports and holds the transport's calls, so a test can act between them.</summary>
internal sealed class GatedSqsClient()
    : AmazonSQSClient(SqsEmulator.Credentials, new AmazonSQSConfig { ServiceURL = SqsEmulator.ServiceUrl, AuthenticationRegion = "us-east-1", MaxErrorRetry = 2 })
{
    private volatile bool _holdSend;
    private volatile bool _failSends;
    private volatile bool _failVisibilityChanges;
    private volatile bool _receivesAfterTheFirstWait;
    private readonly TaskCompletionSource _receivesLetGo = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _deletesToFail;

    /// <summary>Set when the first receive call is made.</summary>
    public TaskCompletionSource ReceiveEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Set when the send held by <see cref="HoldNextSend"/> is made; it waits for <see cref="ReleaseSend"/>.</summary>
    public TaskCompletionSource SendEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Lets the held send go on to SQS.</summary>
    public TaskCompletionSource ReleaseSend { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The payload of each <c>SendMessageBatch</c> call made (bodies and attributes, as SQS counts them), in bytes.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<int> BatchPayloads { get; } = new();

    /// <summary>Holds the next send (one message) until <see cref="ReleaseSend"/>.</summary>
    public void HoldNextSend() => _holdSend = true;

    /// <summary>While true, every send fails as an unavailable service would, without reaching SQS.</summary>
    public bool FailSends
    {
        get => _failSends;
        set => _failSends = value;
    }

    /// <summary>While true, every visibility change (a lease renewal, a nack, a hand-back) fails as an unavailable service would, without reaching SQS.</summary>
    public bool FailVisibilityChanges
    {
        get => _failVisibilityChanges;
        set => _failVisibilityChanges = value;
    }

    /// <summary>While true, every receive after the first waits (set false to let them go, each returning no messages) without reaching SQS.</summary>
    public bool ReceivesAfterTheFirstWait
    {
        get => _receivesAfterTheFirstWait;
        set
        {
            _receivesAfterTheFirstWait = value;
            if (!value)
            {
                _receivesLetGo.TrySetResult();
            }
        }
    }

    /// <summary>Fails the next <paramref name="count"/> delete calls as an unavailable service would, without reaching SQS.</summary>
    public void FailNextDeletes(int count) => Volatile.Write(ref _deletesToFail, count);

    public override Task<DeleteMessageResponse> DeleteMessageAsync(DeleteMessageRequest request, CancellationToken cancellationToken = default)
    {
        ThrowIfDeleteFails();
        return base.DeleteMessageAsync(request, cancellationToken);
    }

    public override Task<DeleteMessageBatchResponse> DeleteMessageBatchAsync(DeleteMessageBatchRequest request, CancellationToken cancellationToken = default)
    {
        ThrowIfDeleteFails();
        return base.DeleteMessageBatchAsync(request, cancellationToken);
    }

    /// <summary>The timeout of each single <c>ChangeMessageVisibility</c> call made (a nack, a hold-back), in seconds.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<int> VisibilityChanges { get; } = new();

    public override Task<ChangeMessageVisibilityResponse> ChangeMessageVisibilityAsync(ChangeMessageVisibilityRequest request, CancellationToken cancellationToken = default)
    {
        if (_failVisibilityChanges)
        {
            throw Unavailable();
        }

        VisibilityChanges.Enqueue(request.VisibilityTimeout ?? 0);
        if (request.VisibilityTimeout > 60 && VisibilityCapSeconds is { } cap)
        {
            request.VisibilityTimeout = cap;
        }

        return base.ChangeMessageVisibilityAsync(request, cancellationToken);
    }

    public override Task<ChangeMessageVisibilityBatchResponse> ChangeMessageVisibilityBatchAsync(ChangeMessageVisibilityBatchRequest request, CancellationToken cancellationToken = default) =>
        _failVisibilityChanges ? throw Unavailable() : base.ChangeMessageVisibilityBatchAsync(request, cancellationToken);

    /// <summary>When set, a single visibility change of more than a minute (a hold-back's hours) hides the message this many seconds instead, as if those hours had passed.</summary>
    public int? VisibilityCapSeconds { get; init; }

    /// <summary>The <c>ApproximateReceiveCount</c> of each message received, in receive order.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<int> ReceiveCounts { get; } = new();

    /// <summary>When each receive call was made, on the system clock.</summary>
    public System.Collections.Concurrent.ConcurrentQueue<DateTimeOffset> Receives { get; } = new();

    public override async Task<ReceiveMessageResponse> ReceiveMessageAsync(ReceiveMessageRequest request, CancellationToken cancellationToken = default)
    {
        Receives.Enqueue(DateTimeOffset.UtcNow);
        if (!ReceiveEntered.TrySetResult() && _receivesAfterTheFirstWait)
        {
            // Returns nothing once let go, as an empty long poll would.
            await _receivesLetGo.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
            return new ReceiveMessageResponse { Messages = [] };
        }

        var response = await base.ReceiveMessageAsync(request, cancellationToken).ConfigureAwait(false);
        foreach (var message in response.Messages ?? [])
        {
            ReceiveCounts.Enqueue(SqsEnvelopeCodec.ReceivesOf(message));
        }

        return response;
    }

    public override async Task<SendMessageResponse> SendMessageAsync(SendMessageRequest request, CancellationToken cancellationToken = default)
    {
        ThrowIfFailing();
        if (_holdSend)
        {
            _holdSend = false;
            SendEntered.TrySetResult();
            await ReleaseSend.Task.ConfigureAwait(false);
        }

        return await base.SendMessageAsync(request, cancellationToken).ConfigureAwait(false);
    }

    public override Task<SendMessageBatchResponse> SendMessageBatchAsync(SendMessageBatchRequest request, CancellationToken cancellationToken = default)
    {
        ThrowIfFailing();
        BatchPayloads.Enqueue(request.Entries.Sum(e => System.Text.Encoding.UTF8.GetByteCount(e.MessageBody)
            + (e.MessageAttributes ?? []).Sum(a => System.Text.Encoding.UTF8.GetByteCount(a.Key) + a.Value.DataType.Length + System.Text.Encoding.UTF8.GetByteCount(a.Value.StringValue ?? ""))));
        return base.SendMessageBatchAsync(request, cancellationToken);
    }

    private void ThrowIfDeleteFails()
    {
        if (Interlocked.Decrement(ref _deletesToFail) >= 0)
        {
            throw Unavailable();
        }
    }

    private void ThrowIfFailing()
    {
        if (_failSends)
        {
            throw Unavailable();
        }
    }

    private static AmazonSQSException Unavailable() => new("Injected by the test.") { ErrorCode = "ServiceUnavailable" };
}
