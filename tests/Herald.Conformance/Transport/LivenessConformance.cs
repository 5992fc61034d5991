using System.Collections.Concurrent;
using Herald.Cqrs.Validation;
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
/// Liveness (issue 10): a queue of poison messages of every class a sender can produce (a type with no handler here, a
/// handler that always fails, a never-retried failure, a body over the receive limit) interleaved with good messages,
/// several times the prefetch. Every good message is handled by a deadline, every poison one is dead-lettered exactly
/// once, and no message is run more often than the retry policy allows (no hot loop). Undecodable input written behind
/// Herald's back is <see cref="UndecodableMessageConformance"/>'s part.
/// </summary>
public abstract class LivenessConformance
{
    private const int Prefetch = 4;
    private const int Rounds = 6;
    private const int MaxAttempts = 3;

    /// <summary>Configures the transport under test (and the stores beside it) on the host.</summary>
    protected abstract void UseTransport(HeraldBuilder herald);

    /// <summary>A queue name of the test's own.</summary>
    protected virtual string NewQueueName() => "live-" + Guid.NewGuid().ToString("N")[..8];

    [Fact]
    public async Task PoisonOfEveryClass_InterleavedWithGoodMessages_BeyondThePrefetch_IsDeadLetteredOnce_AndEveryGoodMessageIsHandled_Issue10()
    {
        var queue = NewQueueName();
        var probe = new Probe();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h =>
        {
            h.Configure(o =>
                {
                    o.EndpointName = queue;
                    o.Prefetch = Prefetch;
                    o.MaxConcurrency = 2;
                    o.MaxReceivedMessageBytes = 2048;
                })
                .AddMessageType<Good>().AddMessageType<Failing>().AddMessageType<Invalid>().AddMessageType<Unhandled>()
                .AddHandler<LiveHandler>(ServiceLifetime.Singleton)
                .ConfigureRetries(r => r.Immediate(1).Delayed(MaxAttempts - 2, TimeSpan.FromMilliseconds(20), TimeSpan.FromMilliseconds(50)));
            UseTransport(h);
        });
        using var host = builder.Build();
        await host.StartAsync();
        var bus = host.Services.GetRequiredService<IMessageBus>();

        var poison = 0;
        for (var i = 0; i < Rounds; i++)
        {
            await bus.SendAsync(new Failing(i));
            await bus.SendAsync(new Good(i * 10));
            await bus.SendAsync(new Invalid(i));
            await bus.SendAsync(new Good((i * 10) + 1));
            await bus.SendAsync(new Unhandled(i));
            await bus.SendAsync(new Good((i * 10) + 2, new string('x', 4096)));
            await bus.SendAsync(new Good((i * 10) + 3));
            poison += 4;
        }

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        var good = Enumerable.Range(0, Rounds).SelectMany(i => new[] { i * 10, (i * 10) + 1, (i * 10) + 3 }).Order().ToList();
        await Eventually.UntilAsync(() => good.All(probe.Good.ContainsKey), "every good message is handled", TimeSpan.FromSeconds(60));
        await Eventually.UntilAsync(
            async () => await deadLetters.CountAsync(new DeadLetterQuery { Endpoint = queue }) >= poison, "every poison message is dead-lettered", TimeSpan.FromSeconds(60));
        await host.StopAsync();

        var stored = await deadLetters.ListAsync(new DeadLetterQuery { Endpoint = queue, Limit = 1000 });
        Assert.Equal(poison, stored.Count);
        Assert.Equal(poison, stored.Select(d => d.Envelope.MessageId).Distinct().Count());
        Assert.Equal(Rounds, stored.Count(d => d.Cause == DeadLetterCause.RetriesExhausted));
        Assert.Equal(Rounds, stored.Count(d => d.Cause == DeadLetterCause.NotRetryable));
        Assert.Equal(Rounds, stored.Count(d => d.Cause == DeadLetterCause.NoHandler));
        Assert.Equal(Rounds, stored.Count(d => d.Cause == DeadLetterCause.TooLarge));
        Assert.All(stored, d => Assert.False(string.IsNullOrWhiteSpace(d.ErrorMessage)));

        // No hot loop: each message ran at most as often as the retry policy allows, and every good one exactly once.
        Assert.All(probe.Runs, run => Assert.InRange(run.Value, 1, MaxAttempts));
        Assert.Equal(MaxAttempts * Rounds, probe.Runs.Where(r => r.Key.StartsWith("failing", StringComparison.Ordinal)).Sum(r => r.Value));
        Assert.Equal(Rounds, probe.Runs.Count(r => r.Key.StartsWith("invalid", StringComparison.Ordinal)));
        Assert.All(probe.Good, g => Assert.Equal(1, g.Value));
        Assert.DoesNotContain(probe.Good.Keys, n => n % 10 == 2);
    }

    /// <summary>A good message (with padding past the receive limit, a poison one).</summary>
    [MessageType("liveness-good")]
    public sealed record Good(int Number, string Padding = "");

    /// <summary>Its handler always throws (retried, then dead-lettered).</summary>
    [MessageType("liveness-failing")]
    public sealed record Failing(int Number);

    /// <summary>Its handler throws a never-retried validation failure.</summary>
    [MessageType("liveness-invalid")]
    public sealed record Invalid(int Number);

    /// <summary>Known, but this endpoint has no handler for it.</summary>
    [MessageType("liveness-unhandled")]
    public sealed record Unhandled(int Number);

    /// <summary>What ran how often.</summary>
    public sealed class Probe
    {
        public ConcurrentDictionary<int, int> Good { get; } = new();

        public ConcurrentDictionary<string, int> Runs { get; } = new(StringComparer.Ordinal);

        public void Ran(string key) => Runs.AddOrUpdate(key, 1, (_, n) => n + 1);
    }

    /// <summary>Handles the good messages and fails the poison ones.</summary>
    public sealed class LiveHandler(Probe probe) : IMessageHandler<Good>, IMessageHandler<Failing>, IMessageHandler<Invalid>
    {
        /// <inheritdoc />
        public ValueTask HandleAsync(Good message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Ran("good-" + message.Number);
            probe.Good.AddOrUpdate(message.Number, 1, (_, n) => n + 1);
            return ValueTask.CompletedTask;
        }

        /// <inheritdoc />
        public ValueTask HandleAsync(Failing message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Ran("failing-" + message.Number);
            throw new InvalidOperationException("always fails");
        }

        /// <inheritdoc />
        public ValueTask HandleAsync(Invalid message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Ran("invalid-" + message.Number);
            throw new ValidationException(typeof(Invalid), [new ValidationError("Number", "never valid")]);
        }
    }
}
