using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Conformance.Reliability;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace Herald.Conformance.Transport;

/// <summary>
/// The one dead-letter path when the dead-letter store is down (issue 9): a message that fails waits in the transport's own
/// dead letters, with its record, and the drain moves it into <see cref="IDeadLetterStore"/> once the store is back, where
/// <see cref="DeadLetterManager"/> sees it as the pipeline recorded it. Derived by each transport with native dead letters.
/// </summary>
public abstract class NativeDeadLetterDrainConformance
{
    /// <summary>The probe number the handler refuses.</summary>
    private const int Poison = -1;

    /// <summary>Configures the transport under test (and the stores beside it) on the host.</summary>
    protected abstract void UseTransport(HeraldBuilder herald);

    /// <summary>How many messages of the queue wait in the engine's native dead letters.</summary>
    protected abstract Task<long> CountNativeDeadLettersAsync(string queue);

    [Fact]
    public async Task StoreDown_AFailedMessageWaitsInTheNativeDeadLetters_AndIsDrainedIntoTheStoreWithItsRecordOnceItIsBack()
    {
        var queue = "drain-" + Guid.NewGuid().ToString("N")[..8];
        var handled = new ConcurrentBag<int>();
        var store = new FaultyDeadLetterStore { Failing = true };
        using var host = await StartHostAsync(queue, handled, store);
        var bus = host.Services.GetRequiredService<IMessageBus>();

        await bus.SendAsync(new DrainProbe(Poison));
        await bus.SendAsync(new DrainProbe(2));

        await Eventually.UntilAsync(() => handled.Contains(2), "the message behind the poison is handled");
        await Eventually.UntilAsync(async () => await CountNativeDeadLettersAsync(queue) == 1, "the poison waits in the native dead letters");
        var refused = store.Refused;
        await Eventually.UntilAsync(() => store.Refused > refused, "the drain tries the store while it is down");
        Assert.Equal(1L, await CountNativeDeadLettersAsync(queue));
        Assert.Equal(0L, await store.CountAsync(DeadLetterQuery.All));

        store.Failing = false;
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = queue }) == 1, "the drain moves it into the store");
        await Eventually.UntilAsync(async () => await CountNativeDeadLettersAsync(queue) == 0, "the native dead letter is gone once stored");
        await host.StopAsync();

        // The record the pipeline made, carried in the headers, not one rebuilt from the reason alone.
        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = queue })).Items);
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Equal(typeof(InvalidOperationException).FullName, deadLetter.ErrorType);
        Assert.Equal(DrainProbeHandler.Refusal, deadLetter.ErrorMessage);
        Assert.Equal(3, deadLetter.AttemptCount);

        // The first failure's time travelled with the message through the delayed retry, then in the native dead letter.
        Assert.True(deadLetter.FirstFailureTime < deadLetter.LastFailureTime, "the first failure is the first attempt's, not the last one's");
        Assert.Null(deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterReason));
        Assert.Null(deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterId));
        Assert.Equal(DrainProbeType, deadLetter.Envelope.MessageType);
        Assert.Equal([2], handled);
    }

    [Fact]
    public async Task ADeadLetterTheStoreKeepsRefusing_StaysInTheNativeDeadLetters_AndTheOnesBehindItAreDrainedIntoTheStore()
    {
        var queue = "drain-" + Guid.NewGuid().ToString("N")[..8];
        var store = new FaultyDeadLetterStore { Failing = true };
        using var host = await StartHostAsync(queue, [], store);
        var bus = host.Services.GetRequiredService<IMessageBus>();

        // Three poisons in the native dead letters while the store is down, the one it will reject for good first.
        await bus.SendAsync(new DrainProbe(Poison));
        await Eventually.UntilAsync(async () => await CountNativeDeadLettersAsync(queue) == 1, "the first poison waits in the native dead letters");
        await bus.SendAsync(new DrainProbe(Poison - 1));
        await bus.SendAsync(new DrainProbe(Poison - 2));
        await Eventually.UntilAsync(async () => await CountNativeDeadLettersAsync(queue) == 3, "all three wait in the native dead letters");

        store.Refuses = d => System.Text.Encoding.UTF8.GetString(d.Envelope.Body.Span).Contains(":" + Poison + "}", StringComparison.Ordinal);
        store.Failing = false;
        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = queue }) == 2, "the drain moves the two behind the refused one");
        await Eventually.UntilAsync(async () => await CountNativeDeadLettersAsync(queue) == 1, "their native copies are gone");

        // Rounds go on refusing it; it stays, and nothing else moves.
        var refused = store.Refused;
        await Eventually.UntilAsync(() => store.Refused > refused + 1, "later rounds try it again");
        await host.StopAsync();
        Assert.Equal(1L, await CountNativeDeadLettersAsync(queue));
        Assert.Equal(2L, await manager.CountAsync(new DeadLetterQuery { Endpoint = queue }));
    }

    private const string DrainProbeType = "conformance-drain-probe";

    private async Task<IHost> StartHostAsync(string queue, ConcurrentBag<int> handled, FaultyDeadLetterStore store)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.EndpointName = queue)
                .AddHandler<DrainProbeHandler>(ServiceLifetime.Singleton)
                .AddMessageType<DrainProbe>()
                .ConfigureRetries(r => r.Immediate(1).Delayed(1, TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(100)))
                .ConfigureDeadLetters(o => o.DrainInterval = TimeSpan.FromMilliseconds(100));
            UseTransport(h);
        });

        // The store the transport's persistence registered, replaced by one that is down until the test says otherwise.
        builder.Services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(store));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>The message the suite sends.</summary>
    [MessageType(DrainProbeType)]
    public sealed record DrainProbe(int Number);

    /// <summary>Handles every probe but the poisons (the poison number and below), which it always refuses.</summary>
    public sealed class DrainProbeHandler(ConcurrentBag<int> handled) : IMessageHandler<DrainProbe>
    {
        /// <summary>Why the poison is refused.</summary>
        public const string Refusal = "the poison probe is refused";

        /// <inheritdoc />
        public ValueTask HandleAsync(DrainProbe message, MessageContext context, CancellationToken cancellationToken)
        {
            if (message.Number <= Poison)
            {
                throw new InvalidOperationException(Refusal);
            }

            handled.Add(message.Number);
            return ValueTask.CompletedTask;
        }
    }
}
