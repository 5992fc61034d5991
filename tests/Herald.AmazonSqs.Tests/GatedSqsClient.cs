using Amazon.SQS;
using Amazon.SQS.Model;

namespace Herald.AmazonSqs.Tests;

/// <summary>An SQS client on the emulator that reports and holds the transport's calls, so a test can act between them.</summary>
internal sealed class GatedSqsClient()
    : AmazonSQSClient(SqsEmulator.Credentials, new AmazonSQSConfig { ServiceURL = SqsEmulator.ServiceUrl, AuthenticationRegion = "us-east-1", MaxErrorRetry = 2 })
{
    /// <summary>Set when the first receive call is made.</summary>
    public TaskCompletionSource ReceiveEntered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public override Task<ReceiveMessageResponse> ReceiveMessageAsync(ReceiveMessageRequest request, CancellationToken cancellationToken = default)
    {
        ReceiveEntered.TrySetResult();
        return base.ReceiveMessageAsync(request, cancellationToken);
    }
}
