using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// Copies the cluster refuses: a relayed record, a nack's redelivery. The refusal is injected into the mock's next produce
/// request, whoever sends it, so these tests run alone (<see cref="ProduceErrorsCollection"/>).
/// </summary>
[Collection(nameof(ProduceErrorsCollection))]
public sealed class RefusedCopyTests : KafkaTestBase
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    // Kafka's MSG_SIZE_TOO_LARGE: the cluster refuses one record (KafkaTransport.ProduceAsync throws MessageRejectedException).
    private const int MsgSizeTooLarge = 10;

    private readonly ITestOutputHelper _output;

    public RefusedCopyTests(ITestOutputHelper output)
    {
        _output = output;
        LoggerFactory = new TestOutputLoggerFactory(output);
    }

    [Fact]
    public async Task Relay_OfARecordTheClusterRefuses_DeadLettersItWithItsReason_AndStillRelaysTheDelayedRecordsBehindIt()
    {
        // The refusal escaped the relay's loop, which stopped for good: every delayed delivery through the topic with it.
        var transport = await CreateTransportAsync();
        var queue = Name("relay-refused");
        var handled = new ConcurrentDictionary<Guid, byte>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            handled.TryAdd(d.Envelope.MessageId, 0);
            return ValueTask.CompletedTask;
        }));
        var probe = NewEnvelope();
        await transport.SendAsync(queue, probe);
        await Eventually.UntilAsync(() => handled.ContainsKey(probe.MessageId), "the consumer reads", Deadline);

        // Both wait in one retry partition (one key); the next record produced, the relay's copy of the first once it is
        // due, is refused.
        var refused = NewEnvelope("k");
        var behind = NewEnvelope("k");
        await transport.SendAsync(queue, refused, new SendOptions { Delay = TimeSpan.FromMilliseconds(1500) });
        await transport.SendAsync(queue, behind, new SendOptions { Delay = TimeSpan.FromMilliseconds(2000) });
        MockCluster.PushProduceErrors(MsgSizeTooLarge);

        await Eventually.UntilAsync(() => handled.ContainsKey(behind.MessageId), "the delayed record behind the refused one is relayed and handled", Deadline);
        Assert.False(handled.ContainsKey(refused.MessageId));
        await Eventually.UntilAsync(() => EndOffsets(queue + ".dead-letter") == 1, "the refused record in the dead-letter topic", Deadline);
        var moved = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (d, _) => { moved.Add(d); return ValueTask.CompletedTask; }));
        var deadLetter = Assert.Single(moved);
        Assert.Equal(refused.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal(queue, deadLetter.Queue);
        Assert.Contains("refused", deadLetter.Reason, StringComparison.Ordinal);
        await Eventually.UntilAsync(() => Uncommitted(queue + ".retry", queue + ".retry") == 0, "the retry topic committed past both", Deadline);
    }
}

/// <summary>Tests that inject errors into the shared mock cluster run alone, so no other test's request takes the error.</summary>
[CollectionDefinition(nameof(ProduceErrorsCollection), DisableParallelization = true)]
public sealed class ProduceErrorsCollection;
