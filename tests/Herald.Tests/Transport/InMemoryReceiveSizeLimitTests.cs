using Herald.Conformance.Transport;
using Herald.Hosting;
using Herald.Messages;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Transport;

/// <summary>
/// The in-memory transport against <see cref="ReceiveSizeLimitConformance"/>. Its queues take any size, so the transport is
/// wrapped to report the suite's send limit, and a raw write goes to the inner transport, past the check.
/// </summary>
public sealed class InMemoryReceiveSizeLimitTests : ReceiveSizeLimitConformance
{
    protected override void UseTransport(HeraldBuilder herald, int maxMessageBytes) =>
        herald.UseTransport(sp => new LimitedTransport(new InMemoryTransport(InMemoryTransportOptions.Default, sp.GetRequiredService<TimeProvider>()), maxMessageBytes));

    protected override async Task WriteRawAsync(IServiceProvider services, string queue, Guid messageId, byte[] body)
    {
        var inner = ((LimitedTransport)services.GetRequiredService<ITransport>()).Inner;
        await inner.SendAsync(queue, new Envelope
        {
            MessageId = messageId,
            MessageType = ProbeType,
            Time = DateTimeOffset.UtcNow,
            ContentType = ContentTypes.Json,
            Headers = EmptyHeaders.Instance,
            Body = body,
        });
    }

    /// <summary>The in-memory transport, reporting a smaller send limit than it enforces.</summary>
    private sealed class LimitedTransport(ITransport inner, int maxMessageBytes) : DelegatingTransport(inner)
    {
        public override TransportCapabilities Capabilities { get; } = inner.Capabilities with { MaxMessageBytes = maxMessageBytes };
    }
}
