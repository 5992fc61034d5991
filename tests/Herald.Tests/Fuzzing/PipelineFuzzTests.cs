using CsCheck;
using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.Tests.Fuzzing;

/// <summary>
/// Issue 10: generated envelopes (hostile types, times, content types, headers, bodies; with and without a transport's
/// decode failure) go through an endpoint's real consuming chain. Every one is handled once or dead-lettered once with a
/// reason; nothing throws out of the chain and nothing is nacked for a redelivery that would only fail again.
/// </summary>
public sealed class PipelineFuzzTests(ITestOutputHelper output)
{
    private const int Cases = 10_000;

    [Fact]
    public async Task GeneratedDeliveries_AreEachHandledOrDeadLetteredWithAReason_AndNoneCrashesTheChain_Issue10()
    {
        var probe = new Probe();
        var store = new RecordingDeadLetterStore();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .Configure(o =>
            {
                o.EndpointName = "fuzz";
                o.StartConsumer = false;
                o.MaxReceivedMessageBytes = 100_000;
            })
            .AddMessageType<FuzzOrder>(FuzzInputs.OrderType)
            .AddHandler<FuzzOrderHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries(r => r.Immediate(0).Delayed(0, TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(1))));
        builder.Services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(store));
        using var host = builder.Build();
        var pipeline = host.Services.GetRequiredService<EndpointPipelineFactory>().Create("fuzz");

        var valid =
            from id in Gen.Guid
            from quantity in Gen.Int[1, 1000]
            from headers in FuzzInputs.Headers
            select (Envelope: new Envelope
            {
                MessageId = id,
                MessageType = FuzzInputs.OrderType,
                Time = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero),
                ContentType = ContentTypes.Json,
                Headers = headers,
                Body = System.Text.Encoding.UTF8.GetBytes($$"""{"quantity":{{quantity}},"name":"n","at":"2030-01-01T00:00:00Z"}"""),
                DeliveryAttempt = 1,
            }, Malformed: false);
        var hostile =
            from id in Gen.OneOf(Gen.Const(Guid.Empty), Gen.Guid)
            from type in FuzzInputs.MessageType
            from version in Gen.OneOf(Gen.Int[-3, 4], Gen.Const(int.MaxValue), Gen.Const(int.MinValue))
            from time in FuzzInputs.Time
            from contentType in FuzzInputs.ContentType
            from headers in FuzzInputs.Headers
            from body in FuzzInputs.Body
            from attempt in Gen.OneOf(Gen.Int[0, 4], Gen.Const(int.MaxValue))
            from malformed in Gen.Bool
            select (Envelope: new Envelope
            {
                MessageId = id,
                MessageType = type,
                SchemaVersion = version,
                Time = time,
                ContentType = contentType,
                Headers = headers,
                Body = body,
                DeliveryAttempt = attempt,
            }, Malformed: malformed);
        var gen = Gen.Frequency((1, valid), (2, hostile));

        var handledBefore = 0;
        var deadBefore = 0;
        await gen.SampleAsync(
            async sample =>
            {
                handledBefore = probe.Handled;
                deadBefore = store.Added;
                var delivery = new FuzzDelivery(sample.Envelope, sample.Malformed ? new MalformedMessageException("Malformed message: generated") : null);

                await pipeline.HandleAsync(delivery, CancellationToken.None);

                var handled = probe.Handled - handledBefore;
                var dead = store.Added - deadBefore;
                Assert.True(handled + dead == 1, $"handled {handled} times and dead-lettered {dead} times");
                Assert.Null(delivery.Nacked);
                Assert.Null(delivery.NativeDeadLetter);
                if (dead == 1)
                {
                    Assert.False(string.IsNullOrWhiteSpace(store.Last!.ErrorMessage), "the dead letter says why");
                    Assert.True(delivery.Acked, "a dead-lettered delivery is acked");
                }
            },
            seed: FuzzInputs.Seed,
            iter: Cases,
            threads: 1,
            writeLine: output.WriteLine);

        output.WriteLine($"{Cases} cases: {probe.Handled} handled, {store.Added} dead-lettered ({string.Join(", ", store.Causes.Select(c => $"{c.Key} {c.Value}"))})");
        Assert.Equal(Cases, probe.Handled + store.Added);
        Assert.True(probe.Handled > Cases / 10, "the generator reaches the handler too");
        Assert.True(store.Causes.Count >= 4, "the generator reaches many kinds of poison");
    }

    /// <summary>A message type that validates in its constructor.</summary>
    public sealed record FuzzOrder
    {
        public FuzzOrder(int quantity, string name, DateTimeOffset at)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(quantity);
            Quantity = quantity;
            Name = name;
            At = at;
        }

        public int Quantity { get; }

        public string Name { get; }

        public DateTimeOffset At { get; }
    }

    public sealed class Probe
    {
        private int _handled;

        public int Handled => Volatile.Read(ref _handled);

        public void Add() => Interlocked.Increment(ref _handled);
    }

    public sealed class FuzzOrderHandler(Probe probe) : IMessageHandler<FuzzOrder>
    {
        public ValueTask HandleAsync(FuzzOrder message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Add();
            return ValueTask.CompletedTask;
        }
    }

    private sealed class FuzzDelivery(Envelope envelope, Exception? failure) : Delivery(envelope, "fuzz", failure)
    {
        public bool Acked { get; private set; }

        public TimeSpan? Nacked { get; private set; }

        public string? NativeDeadLetter { get; private set; }

        protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
        {
            Acked = true;
            return ValueTask.CompletedTask;
        }

        protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            Nacked = delay;
            return ValueTask.CompletedTask;
        }

        protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken)
        {
            NativeDeadLetter = reason;
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>Counts what the chain dead-letters, by cause, keeping only the last one.</summary>
    private sealed class RecordingDeadLetterStore : IDeadLetterStore
    {
        public int Added { get; private set; }

        public DeadLetter? Last { get; private set; }

        public Dictionary<DeadLetterCause, int> Causes { get; } = [];

        public ValueTask AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
        {
            Added++;
            Last = deadLetter;
            Causes[deadLetter.Cause] = Causes.GetValueOrDefault(deadLetter.Cause) + 1;
            return ValueTask.CompletedTask;
        }

        public ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) => AddAsync(deadLetter, cancellationToken);

        public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) => new((DeadLetter?)null);

        public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => new([]);

        public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => new(0L);

        public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default) => new(false);

        public ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => new(0);

        public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default) => new(false);
    }
}
