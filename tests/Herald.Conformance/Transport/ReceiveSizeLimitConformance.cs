using System.Collections.Concurrent;
using System.Text;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace Herald.Conformance.Transport;

/// <summary>
/// The receive-side size limit (issue 10): a delivered body over the endpoint's limit is dead-lettered as
/// <see cref="DeadLetterCause.TooLarge"/> with its reason, without being read, and the messages behind it are handled. By
/// default the limit is the transport's send limit, so a larger message from a foreign sender is refused on receipt too.
/// </summary>
public abstract class ReceiveSizeLimitConformance
{
    /// <summary>The send limit each derived test gives its transport (<c>MaxMessageBytes</c>).</summary>
    protected const int SendLimit = 4096;

    /// <summary>The message type of the suite's probes.</summary>
    protected const string ProbeType = "conformance-size-probe";

    /// <summary>Configures the transport under test with a send limit of <paramref name="maxMessageBytes"/> (and the stores beside it).</summary>
    protected abstract void UseTransport(HeraldBuilder herald, int maxMessageBytes);

    /// <summary>Puts a <see cref="ProbeType"/> message with <paramref name="body"/> into the queue behind Herald's back (no send check).</summary>
    protected abstract Task WriteRawAsync(IServiceProvider services, string queue, Guid messageId, byte[] body);

    /// <summary>A queue name of the test's own (an engine shared by other tests may want its own prefix, to clean up).</summary>
    protected virtual string NewQueueName() => "size-" + Guid.NewGuid().ToString("N")[..8];

    [Fact]
    public async Task ABodyOverTheReceiveLimit_IsDeadLetteredAsTooLarge_AndTheMessagesBehindItAreHandled_Issue10()
    {
        var queue = NewQueueName();
        var handled = new ConcurrentBag<int>();
        using var host = await StartHostAsync(queue, handled, maxReceived: 512);
        var bus = host.Services.GetRequiredService<IMessageBus>();

        await bus.SendAsync(new Probe(1, new string('x', 2000)));
        await bus.SendAsync(new Probe(2, "small"));
        await bus.SendAsync(new Probe(3, "small"));

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(() => handled.Contains(2) && handled.Contains(3), "the messages behind the large one are handled");
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) == 1, "the large message is dead-lettered");
        await host.StopAsync();

        var deadLetter = Assert.Single(await deadLetters.ListAsync(DeadLetterQuery.All));
        Assert.Equal(DeadLetterCause.TooLarge, deadLetter.Cause);
        Assert.Contains("512 bytes", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(1, deadLetter.AttemptCount);
        Assert.DoesNotContain(1, handled);
    }

    [Fact]
    public async Task ABodyOverTheTransportsSendLimit_IsDeadLetteredAsTooLarge_ByDefault_Issue10()
    {
        var queue = NewQueueName();
        var handled = new ConcurrentBag<int>();
        using var host = await StartHostAsync(queue, handled, maxReceived: null);

        var largeId = Guid.CreateVersion7();
        await WriteRawAsync(host.Services, queue, largeId, Encoding.UTF8.GetBytes($$"""{"number":1,"padding":"{{new string('x', SendLimit)}}"}"""));
        await WriteRawAsync(host.Services, queue, Guid.CreateVersion7(), """{"number":2,"padding":""}"""u8.ToArray());

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(() => handled.Contains(2), "the message behind the large one is handled");
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) == 1, "the large message is dead-lettered");
        await host.StopAsync();

        var deadLetter = Assert.Single(await deadLetters.ListAsync(DeadLetterQuery.All));
        Assert.Equal(largeId, deadLetter.Envelope.MessageId);
        Assert.Equal(DeadLetterCause.TooLarge, deadLetter.Cause);
        Assert.Contains($"{SendLimit} bytes", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.DoesNotContain(1, handled);
    }

    private async Task<IHost> StartHostAsync(string queue, ConcurrentBag<int> handled, int? maxReceived)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h =>
        {
            h.Configure(o =>
            {
                o.EndpointName = queue;
                o.MaxReceivedMessageBytes = maxReceived;
            }).AddHandler<ProbeHandler>(ServiceLifetime.Singleton).AddMessageType<Probe>();
            UseTransport(h, SendLimit);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>The message the suite sends; its padding makes it as large as a test needs.</summary>
    [MessageType(ProbeType)]
    public sealed record Probe(int Number, string Padding);

    /// <summary>Notes which probes were handled.</summary>
    public sealed class ProbeHandler(ConcurrentBag<int> handled) : IMessageHandler<Probe>
    {
        /// <inheritdoc />
        public ValueTask HandleAsync(Probe message, MessageContext context, CancellationToken cancellationToken)
        {
            handled.Add(message.Number);
            return ValueTask.CompletedTask;
        }
    }
}
