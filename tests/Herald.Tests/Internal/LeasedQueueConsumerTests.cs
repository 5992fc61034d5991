using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Internal;
using Herald.Messages;
using Herald.Tests.Reliability;
using Herald.Transport;

namespace Herald.Tests.Internal;

/// <summary>The leased-queue consumer over a backend in memory: what every backend (SQL queues now, SQS next) gets from it (issue 9).</summary>
public sealed class LeasedQueueConsumerTests
{
    private const int LeaseLostEvent = 1212;

    [Fact]
    public async Task AMessageTheBackendCouldNotDecode_IsDeliveredWithItsDecodeFailure_AndSettledLikeAnyOther()
    {
        var backend = new Backend();
        var failure = new FormatException("the headers are not a JSON object");
        backend.Add(new Message(1, failure));
        var seen = new ConcurrentQueue<Delivery>();
        await using var consumer = Start(backend, new LogCollector(), (delivery, _) =>
        {
            seen.Enqueue(delivery);
            return ValueTask.CompletedTask;
        });

        await Eventually.UntilAsync(() => backend.Calls.Contains("ack 1"), "the delivery is acked after its handler returns");

        var delivery = Assert.Single(seen);
        Assert.Same(failure, delivery.DecodeFailure);
        Assert.Equal("leased", delivery.Queue);
    }

    [Fact]
    public async Task ASettlementWhoseLeaseWasLost_IsLogged_NotPassedOffAsDone()
    {
        var backend = new Backend { LeasesLost = true };
        var logs = new LogCollector();
        backend.Add(new Message(1));
        await using var consumer = Start(backend, logs, (_, _) => ValueTask.CompletedTask);

        await Eventually.UntilAsync(() => logs.Entries.Any(e => e.EventId == LeaseLostEvent), "the lost lease is logged");

        Assert.Contains("ack", Assert.Single(logs.Entries, e => e.EventId == LeaseLostEvent).Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AHandlerThatThrows_IsNackedAtOnce_AndStoppingHandsBackWhatIsStillHeld()
    {
        var backend = new Backend();
        backend.Add(new Message(1));
        var consumer = Start(backend, new LogCollector(), (_, _) => throw new InvalidOperationException("handler failed"));

        await Eventually.UntilAsync(() => backend.Calls.Contains("nack 1 after 00:00:00"), "the failed delivery is nacked without delay");
        await consumer.DisposeAsync();

        Assert.Equal("release all", backend.Calls.Last());
    }

    [Fact]
    public async Task ANackWithHeaders_GivesTheBackendTheMessagesOwnHeaders_WithTheNacksMergedIn()
    {
        var backend = new Backend();
        backend.Add(new Message(1, headers: new() { ["tenant"] = "acme", ["herald-first-failure"] = "old" }));
        await using var consumer = Start(backend, new LogCollector(), (delivery, ct) =>
            delivery.NackAsync(TimeSpan.FromSeconds(5), new Dictionary<string, string> { ["herald-first-failure"] = "new" }, ct));

        await Eventually.UntilAsync(() => backend.Calls.Any(c => c.StartsWith("nack 1", StringComparison.Ordinal)), "the delivery is nacked");

        Assert.Contains("nack 1 after 00:00:05 with herald-first-failure=new, tenant=acme", backend.Calls);
    }

    [Fact]
    public async Task EachClaim_AsksForNoMoreThanTheBackendServesAtOnce()
    {
        var backend = new Backend();
        for (var i = 0; i < 25; i++)
        {
            backend.Add(new Message(i));
        }

        await using var consumer = Start(
            backend,
            new LogCollector(),
            (_, _) => ValueTask.CompletedTask,
            new ConsumerOptions { MaxConcurrency = 4, Prefetch = 20 },
            maxClaim: 10);

        await Eventually.UntilAsync(() => backend.Calls.Count(c => c.StartsWith("ack", StringComparison.Ordinal)) == 25, "every message is acked");

        Assert.Equal(10, backend.LargestClaim);
    }

    private static LeasedQueueConsumer<Message> Start(
        Backend backend,
        LogCollector logs,
        DeliveryHandler handler,
        ConsumerOptions? options = null,
        int maxClaim = int.MaxValue)
    {
        var settings = new LeasedQueueSettings
        {
            LeaseDuration = TimeSpan.FromSeconds(30),
            PollInterval = TimeSpan.FromMilliseconds(50),
            MaxClaim = maxClaim,
            Logger = logs.CreateLogger("Herald.Tests.Leased"),
            Name = "an in-memory leased queue",
        };
        var consumer = new LeasedQueueConsumer<Message>(backend, "leased", options ?? ConsumerOptions.Default, handler, settings);
        consumer.Start();
        return consumer;
    }

    private sealed class Message(int number, Exception? decodeFailure = null, Dictionary<string, string>? headers = null) : LeasedMessage(
        new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "leased-test", Time = DateTimeOffset.UtcNow, DeliveryAttempt = 1, Headers = headers ?? new Dictionary<string, string>() },
        decodeFailure)
    {
        public int Number => number;
    }

    /// <summary>Messages in memory, claimed in order; records every call a consumer makes.</summary>
    private sealed class Backend : ILeasedQueueBackend<Message>
    {
        private readonly ConcurrentQueue<Message> _ready = new();
        private TaskCompletionSource _wake = New();
        private int _largestClaim;

        public ConcurrentQueue<string> Calls { get; } = new();

        public bool LeasesLost { get; init; }

        public int LargestClaim => Volatile.Read(ref _largestClaim);

        public void Add(Message message)
        {
            _ready.Enqueue(message);
            Interlocked.Exchange(ref _wake, New()).TrySetResult();
        }

        public Task NextWakeUp() => Volatile.Read(ref _wake).Task;

        public ValueTask<LeasedClaim<Message>> ClaimAsync(int max, CancellationToken cancellationToken)
        {
            // One fetch loop claims at a time.
            Volatile.Write(ref _largestClaim, Math.Max(_largestClaim, max));
            var claimed = new List<Message>();
            while (claimed.Count < max && _ready.TryDequeue(out var message))
            {
                claimed.Add(message);
            }

            return ValueTask.FromResult(new LeasedClaim<Message>(claimed, DateTimeOffset.UtcNow.AddSeconds(30), NextVisibleAt: null));
        }

        public ValueTask<DateTimeOffset> RenewAsync(CancellationToken cancellationToken) => ValueTask.FromResult(DateTimeOffset.UtcNow.AddSeconds(30));

        public ValueTask<bool> AckAsync(Message message, CancellationToken cancellationToken) => Record($"ack {message.Number}");

        public ValueTask<bool> NackAsync(Message message, TimeSpan delay, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken) =>
            Record(headers is null ? $"nack {message.Number} after {delay}" : $"nack {message.Number} after {delay} with {string.Join(", ", headers.OrderBy(h => h.Key, StringComparer.Ordinal).Select(h => $"{h.Key}={h.Value}"))}");

        public ValueTask<bool> DeadLetterAsync(Message message, string reason, CancellationToken cancellationToken) => Record($"dead-letter {message.Number}");

        public async ValueTask ReleaseAsync(Message message, CancellationToken cancellationToken) => await Record($"release {message.Number}");

        public async ValueTask ReleaseAllAsync(CancellationToken cancellationToken) => await Record("release all");

        private ValueTask<bool> Record(string call)
        {
            Calls.Enqueue(call);
            return ValueTask.FromResult(!LeasesLost);
        }

        private static TaskCompletionSource New() => new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
