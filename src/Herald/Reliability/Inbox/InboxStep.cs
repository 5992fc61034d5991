using Herald.Handling;
using Microsoft.Extensions.Options;

namespace Herald.Reliability.Inbox;

/// <summary>The inbox step of the consuming pipeline: marks the message handled in the attempt's unit of work, or reports a duplicate.</summary>
internal sealed class InboxStep(IInbox inbox, IOptions<InboxOptions> options)
{
    private readonly InboxOptions _options = options.Value;

    public bool IsEnabledFor(string endpoint) => _options.IsEnabledFor(endpoint);

    /// <summary>True when the message is new here (and is now marked, pending the commit); false for a duplicate.</summary>
    public ValueTask<bool> TryEnterAsync(MessageContext context) =>
        inbox.TryMarkHandledAsync(context.Endpoint, context.Envelope.MessageId, _options.Window, context.UnitOfWork, context.CancellationToken);
}
