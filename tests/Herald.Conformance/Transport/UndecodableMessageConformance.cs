using System.Collections.Concurrent;
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
/// A message the transport cannot decode (written to the engine behind Herald's back) reaches the one dead-letter path,
/// <see cref="IDeadLetterStore"/>, with its reason, and does not hold up the messages behind it (issue 9). Each transport
/// whose engine can hold such a message derives it and writes one its own way.
/// </summary>
public abstract class UndecodableMessageConformance
{
    /// <summary>The body of the message that cannot be decoded (valid in itself: the envelope around it is what is broken).</summary>
    protected static ReadOnlyMemory<byte> UndecodableBody { get; } = "{\"number\":1}"u8.ToArray();

    /// <summary>The message type of the undecodable message, one the host has a handler for.</summary>
    protected const string ProbeType = "conformance-undecodable-probe";

    /// <summary>Configures the transport under test (and the stores beside it) on the host.</summary>
    protected abstract void UseTransport(HeraldBuilder herald);

    /// <summary>Writes a message of <see cref="ProbeType"/> with <see cref="UndecodableBody"/> whose envelope the transport cannot decode.</summary>
    protected abstract Task WriteUndecodableAsync(string queue, Guid messageId);

    /// <summary>Writes a message whose every column the engine lets be wrong is wrong (id, type, time, headers, body), as raw rows can be.</summary>
    protected abstract Task WriteBrokenAsync(string queue);

    /// <summary>How many messages the queue still holds, settled or not.</summary>
    protected abstract Task<long> CountQueuedAsync(string queue);

    /// <summary>How many messages of the queue went to the engine's native dead letters.</summary>
    protected abstract Task<long> CountNativeDeadLettersAsync(string queue);

    // Regression (issue 9): a stored message whose envelope failed to decode made every claim of its queue fail, so nothing behind it was delivered.
    [Fact]
    public async Task AMessageWithACorruptEnvelope_IsDeadLetteredWithItsReason_AndTheMessageBehindItIsHandled()
    {
        var queue = "undecodable-" + Guid.NewGuid().ToString("N")[..8];
        var handled = new ConcurrentBag<int>();
        using var host = await StartHostAsync(queue, handled);

        var undecodableId = Guid.CreateVersion7();
        await WriteUndecodableAsync(queue, undecodableId);
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Probe(2));

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) == 1, "the undecodable message is dead-lettered");
        await Eventually.UntilAsync(() => handled.Contains(2), "the message behind it is handled");
        await Eventually.UntilAsync(async () => await CountQueuedAsync(queue) == 0, "the queue is empty");
        await host.StopAsync();

        var deadLetter = Assert.Single(await deadLetters.ListAsync(DeadLetterQuery.All));
        Assert.Equal(undecodableId, deadLetter.Envelope.MessageId);
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.False(string.IsNullOrWhiteSpace(deadLetter.ErrorMessage), "the dead letter says why");
        Assert.Equal(UndecodableBody.ToArray(), deadLetter.Envelope.Body.ToArray());
        Assert.DoesNotContain(1, handled);
        Assert.Equal(0L, await CountNativeDeadLettersAsync(queue));
    }

    // Issue 10: a row that cannot be turned into an envelope at all is dead-lettered with a reason, and the claim goes on.
    [Fact]
    public async Task ARowWithEveryColumnBroken_IsDeadLetteredWithAReason_AndTheClaimGoesOn()
    {
        var queue = "broken-" + Guid.NewGuid().ToString("N")[..8];
        var handled = new ConcurrentBag<int>();
        using var host = await StartHostAsync(queue, handled);

        await WriteBrokenAsync(queue);
        await WriteBrokenAsync(queue);
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Probe(3));

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(() => handled.Contains(3), "the message behind the broken rows is handled");
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) == 2, "both broken rows are dead-lettered");
        await Eventually.UntilAsync(async () => await CountQueuedAsync(queue) == 0, "the queue is empty");
        await host.StopAsync();

        Assert.All(await deadLetters.ListAsync(DeadLetterQuery.All), d =>
        {
            Assert.Contains(d.Cause, new[] { DeadLetterCause.Undecodable, DeadLetterCause.InvalidEnvelope });
            Assert.False(string.IsNullOrWhiteSpace(d.ErrorMessage), "the dead letter says why");
        });
        Assert.Equal(0L, await CountNativeDeadLettersAsync(queue));
    }

    private async Task<IHost> StartHostAsync(string queue, ConcurrentBag<int> handled)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.EndpointName = queue).AddHandler<ProbeHandler>(ServiceLifetime.Singleton).AddMessageType<Probe>();
            UseTransport(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>The message the suite sends and handles.</summary>
    [MessageType(ProbeType)]
    public sealed record Probe(int Number);

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
