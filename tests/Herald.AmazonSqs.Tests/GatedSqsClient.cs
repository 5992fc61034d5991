using Amazon.SQS;
using Amazon.SQS.Model;

namespace Herald.AmazonSqs.Tests;

/// <summary>An SQS client on the emulator that reports and holds the transport's calls, so a test can act between them.</summary>
internal sealed class GatedSqsClient()
    : AmazonSQSClient(SqsEmulator.Credentials, new AmazonSQSConfig { ServiceURL = SqsEmulator.ServiceUrl, AuthenticationRegion = "us-east-1", MaxErrorRetry = 2 })
{
    private volatile bool _failSends;

    /// <summary>Set when the first receive call is made.</summary>
    public TaskCompletionSource ReceiveEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>While true, every send fails as an unavailable service would, without reaching SQS.</summary>
    public bool FailSends
    {
        get => _failSends;
        set => _failSends = value;
    }

    public override Task<ReceiveMessageResponse> ReceiveMessageAsync(ReceiveMessageRequest request, CancellationToken cancellationToken = default)
    {
        ReceiveEntered.TrySetResult();
        return base.ReceiveMessageAsync(request, cancellationToken);
    }

    public override Task<SendMessageResponse> SendMessageAsync(SendMessageRequest request, CancellationToken cancellationToken = default)
    {
        ThrowIfFailing();
        return base.SendMessageAsync(request, cancellationToken);
    }

    public override Task<SendMessageBatchResponse> SendMessageBatchAsync(SendMessageBatchRequest request, CancellationToken cancellationToken = default)
    {
        ThrowIfFailing();
        return base.SendMessageBatchAsync(request, cancellationToken);
    }

    private void ThrowIfFailing()
    {
        if (_failSends)
        {
            throw new AmazonSQSException("Injected by the test.") { ErrorCode = "ServiceUnavailable" };
        }
    }
}
