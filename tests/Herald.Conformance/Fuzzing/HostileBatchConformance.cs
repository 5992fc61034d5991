using System.Collections.Concurrent;
using CsCheck;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;
using Xunit.Abstractions;

namespace Herald.Conformance.Fuzzing;

/// <summary>
/// The end-to-end half of a transport's fuzz test (issue 10): a batch of generated hostile messages, written to the real
/// engine behind Herald's back (a plain client, raw rows) and interleaved with good messages sent through the bus, is
/// consumed by a real host. Every good message is handled once, every hostile one that the engine stored is dead-lettered
/// once with a reason, the queue ends empty and nothing is redelivered in a loop. The hostile messages are generated from
/// the fixed seeds of <see cref="Fuzz"/>: message <c>i</c> is the input of <see cref="Fuzz.SeedOf"/>(i). The many-case
/// half fuzzes the transport's decode function in process.
/// </summary>
/// <typeparam name="THostile">What the transport's generator makes: headers and a body, a row.</typeparam>
public abstract class HostileBatchConformance<THostile>(ITestOutputHelper output)
{
    /// <summary>The test's output.</summary>
    protected ITestOutputHelper Output { get; } = output;

    /// <summary>The message type of the good messages; no hostile message may be a valid one of it.</summary>
    protected const string ProbeType = "hostile-batch-probe";

    /// <summary>The receive limit of the host: a larger hostile body is dead-lettered as too large.</summary>
    protected const int MaxReceivedMessageBytes = 32 * 1024;

    /// <summary>How many hostile messages the batch holds (as many good ones are interleaved).</summary>
    protected virtual int HostileCount => 40;

    /// <summary>How long the batch may take to drain.</summary>
    protected virtual TimeSpan Deadline => TimeSpan.FromSeconds(60);

    /// <summary>The hostile messages: never a valid message of <see cref="ProbeType"/>.</summary>
    protected abstract Gen<THostile> HostileMessages { get; }

    /// <summary>Configures the transport under test (and the stores beside it) on the host.</summary>
    protected abstract void UseTransport(HeraldBuilder herald);

    /// <summary>Writes one hostile message to the queue behind Herald's back; false when the engine refused or dropped it (a duplicate id).</summary>
    protected abstract Task<bool> WriteHostileAsync(string queue, THostile message);

    /// <summary>How many messages the queue still holds, settled or not.</summary>
    protected abstract Task<long> CountQueuedAsync(string queue);

    /// <summary>A queue name of the test's own.</summary>
    protected virtual string NewQueueName() => "hostile-" + Guid.NewGuid().ToString("N")[..8];

    [Fact]
    public async Task GeneratedHostileMessages_InterleavedWithGoodOnes_AreEachDeadLetteredOnceWithAReason_AndEveryGoodOneIsHandled_Issue10()
    {
        var queue = NewQueueName();
        var handled = new ConcurrentDictionary<int, int>();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h =>
        {
            h.Configure(o =>
                {
                    o.EndpointName = queue;
                    o.MaxReceivedMessageBytes = MaxReceivedMessageBytes;
                })
                .AddMessageType<Probe>(ProbeType)
                .AddHandler<ProbeHandler>(ServiceLifetime.Singleton)
                .ConfigureRetries(r => r.Immediate(0).Delayed(1, TimeSpan.FromMilliseconds(20), TimeSpan.FromMilliseconds(50)));
            UseTransport(h);
        });
        using var host = builder.Build();
        await host.StartAsync();
        var bus = host.Services.GetRequiredService<IMessageBus>();

        var batch = Fuzz.Batch(HostileMessages, HostileCount);
        var written = 0;
        for (var i = 0; i < batch.Count; i++)
        {
            if (await WriteHostileAsync(queue, batch[i]))
            {
                written++;
            }

            await bus.SendAsync(new Probe(i));
        }

        Output.WriteLine($"{written} of {batch.Count} hostile messages stored (seeds {Fuzz.SeedOf(0)} .. {Fuzz.SeedOf(batch.Count - 1)}), {batch.Count} good ones sent");
        Assert.True(written >= batch.Count / 2, $"the engine stored most hostile messages ({written} of {batch.Count})");

        var deadLetters = host.Services.GetRequiredService<IDeadLetterStore>();
        await Eventually.UntilAsync(() => handled.Count == batch.Count, "every good message is handled", Deadline);
        await Eventually.UntilAsync(async () => await deadLetters.CountAsync(DeadLetterQuery.All) >= written, "every hostile message is dead-lettered", Deadline);
        await Eventually.UntilAsync(async () => await CountQueuedAsync(queue) == 0, "the queue is empty", Deadline);
        await host.StopAsync();

        var stored = await deadLetters.ListAsync(new DeadLetterQuery { Limit = 1000 });
        Output.WriteLine($"dead letters by cause: {string.Join(", ", stored.GroupBy(d => d.Cause).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"))}");
        Assert.Equal(written, stored.Count);
        Assert.All(stored, d => Assert.False(string.IsNullOrWhiteSpace(d.ErrorMessage), "the dead letter says why"));
        Assert.All(handled, h => Assert.True(h.Value == 1, $"good message {h.Key} handled {h.Value} times"));
        Assert.Equal(Enumerable.Range(0, batch.Count), handled.Keys.Order());
    }

    /// <summary>The good message.</summary>
    public sealed record Probe(int Number);

    /// <summary>Counts how often each good message is handled.</summary>
    public sealed class ProbeHandler(ConcurrentDictionary<int, int> handled) : IMessageHandler<Probe>
    {
        /// <inheritdoc />
        public ValueTask HandleAsync(Probe message, MessageContext context, CancellationToken cancellationToken)
        {
            handled.AddOrUpdate(message.Number, 1, static (_, n) => n + 1);
            return ValueTask.CompletedTask;
        }
    }
}
