using System.Threading.Channels;
using Herald.Conformance;
using Herald.Kafka.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// Commits that no later commit of the consumer carries, failing: the one made as a rebalance takes partitions away, and
/// the read of the group's committed offsets at an assignment. Their log must not say that the next commit carries the
/// offsets (6016). The failure is injected into the mock's next request of its kind, whoever sends it, so these run alone
/// (<see cref="ProduceErrorsCollection"/>).
/// </summary>
[Collection(nameof(ProduceErrorsCollection))]
public sealed class RevocationCommitTests : KafkaTestBase
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    // Kafka's OffsetCommit and OffsetFetch API keys, and errors of them that are not retried.
    private const short OffsetCommit = 8;
    private const short OffsetFetch = 9;
    private const int OffsetMetadataTooLarge = 12;
    private const int GroupAuthorizationFailed = 30;

    private readonly ITestOutputHelper _output;

    public RevocationCommitTests(ITestOutputHelper output)
    {
        _output = output;
    }

    [Fact]
    public async Task Rebalance_WhoseRevocationCommitFails_LogsThatTheNewOwnerMayHandleTheRecordsAgain_AndNotThatTheNextCommitCarriesThem()
    {
        var first = new RecordingLoggerFactory(new TestOutputLoggerFactory(_output));
        LoggerFactory = first;

        // Commits only on revocation once the records are handled: the periodic one does not come again within the test.
        var transport = await CreateTransportAsync(o => o.CommitInterval = TimeSpan.FromHours(1));
        var queue = Name("revocation-commit");
        MockCluster.CreateTopic(queue, 2);
        var sent = Enumerable.Range(0, 8).Select(i => NewEnvelope("key-" + i)).ToList();
        var handled = 0;
        var allHandled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = (KafkaConsumer)Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) =>
        {
            if (Interlocked.Increment(ref handled) == sent.Count)
            {
                allHandled.TrySetResult();
            }

            return ValueTask.CompletedTask;
        }));
        var revoked = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        consumer.Revoking += partitions => revoked.TrySetResult(string.Join(", ", partitions));
        foreach (var envelope in sent)
        {
            await transport.SendAsync(queue, envelope);
        }

        await allHandled.Task.WaitAsync(Deadline);

        // The revocation's commit is the next one: the first member commits nothing else within the hour, and the second
        // is given the partition only once the first gave it up.
        MockCluster.PushRequestErrors(OffsetCommit, OffsetMetadataTooLarge);
        LoggerFactory = new TestOutputLoggerFactory(_output);
        var second = await CreateTransportAsync();
        Own(await second.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask));
        var partitions = await revoked.Task.WaitAsync(Deadline);

        await Eventually.UntilAsync(() => first.Entries.Any(e => e.Id is 6016 or 6031), "the failed revocation commit logged", Deadline);
        Assert.DoesNotContain(first.Entries, e => e.Id == 6016);
        var entry = Assert.Single(first.Entries, e => e.Id == 6031);
        Assert.Contains(queue, entry.Message, StringComparison.Ordinal);
        Assert.Contains(partitions, entry.Message, StringComparison.Ordinal);
        Assert.Contains("handled again", entry.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Assignment_WhoseReadOfTheCommittedOffsetsFails_LogsThatRead_AndNotACommitFailure()
    {
        var log = new RecordingLoggerFactory(new TestOutputLoggerFactory(_output));
        LoggerFactory = log;
        var transport = await CreateTransportAsync();
        var queue = Name("read-committed");
        MockCluster.CreateTopic(queue, 2);

        // The queue's retry relay (one per transport) reads its group's offsets too: once a delayed record went through it
        // to the first member, it has.
        var handled = Channel.CreateUnbounded<Guid>();
        DeliveryHandler handler = (delivery, _) =>
        {
            handled.Writer.TryWrite(delivery.Envelope.MessageId);
            return ValueTask.CompletedTask;
        };
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, handler));
        var delayed = NewEnvelope();
        await transport.SendAsync(queue, delayed, new SendOptions { Delay = TimeSpan.FromMilliseconds(10) });
        Assert.Equal(delayed.MessageId, await handled.Reader.ReadAsync().AsTask().WaitAsync(Deadline));

        // A second member of the group is given a partition: the next OffsetFetch is its assignment callback's read, made
        // before its client's own (the first member only gives the partition up, and commits).
        MockCluster.PushRequestErrors(OffsetFetch, GroupAuthorizationFailed);
        var second = (KafkaConsumer)Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, handler));
        await Eventually.UntilAsync(() => second.Assignment.Count > 0, "the second member given a partition", Deadline);

        // The consumers go on.
        var later = Enumerable.Range(0, 8).Select(i => NewEnvelope("key-" + i)).ToList();
        foreach (var envelope in later)
        {
            await transport.SendAsync(queue, envelope);
        }

        for (var i = 0; i < later.Count; i++)
        {
            await handled.Reader.ReadAsync().AsTask().WaitAsync(Deadline);
        }

        Assert.DoesNotContain(log.Entries, e => e.Id == 6016);
        var entry = Assert.Single(log.Entries, e => e.Id == 6032);
        Assert.Contains(queue, entry.Message, StringComparison.Ordinal);
        Assert.Contains("Reading the committed offsets", entry.Message, StringComparison.Ordinal);
    }
}
