using Herald.Conformance;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// The last commit a consumer makes as it stops fails: no commit comes after it, so its log must not say that the next
/// one carries the offsets (log 6016), but name the final commit, once. The failure is injected into the mock's next
/// OffsetCommit request, whoever sends it, so this runs alone (<see cref="ProduceErrorsCollection"/>).
/// </summary>
[Collection(nameof(ProduceErrorsCollection))]
public sealed class FinalCommitTests : KafkaTestBase
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    // Kafka's OffsetCommit API key, and OFFSET_METADATA_TOO_LARGE: an error of a commit that is not retried.
    private const short OffsetCommit = 8;
    private const int OffsetMetadataTooLarge = 12;

    private readonly RecordingLoggerFactory _log;

    public FinalCommitTests(ITestOutputHelper output)
    {
        _log = new RecordingLoggerFactory(new TestOutputLoggerFactory(output));
        LoggerFactory = _log;
    }

    [Fact]
    public async Task Stop_WhoseFinalCommitFails_LogsThatTheFinalCommitFailedOnce_AndNotThatTheNextCommitCarriesIt()
    {
        // Commits only at stop: the periodic one does not come again within the test.
        var transport = await CreateTransportAsync(o => o.CommitInterval = TimeSpan.FromHours(1));
        var queue = Name("final-commit");
        MockCluster.CreateTopic(queue, 1);
        var handled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) =>
        {
            handled.TrySetResult();
            return ValueTask.CompletedTask;
        }));
        await transport.SendAsync(queue, NewEnvelope());
        await handled.Task.WaitAsync(Deadline);

        // Two: the final commit, and the revocation's when the client closes, which commits the same offsets again.
        MockCluster.PushRequestErrors(OffsetCommit, OffsetMetadataTooLarge, OffsetMetadataTooLarge);
        await consumer.StopAsync().WaitAsync(Deadline);
        Assert.Equal(1, Uncommitted(queue, queue)); // both failed: the handled record's offset is not committed

        var commitLogs = _log.Entries.Where(e => e.Id is 6016 or 6030).ToList();
        Assert.DoesNotContain(commitLogs, e => e.Id == 6016);
        var final = Assert.Single(commitLogs);
        Assert.Contains("final commit", final.Message, StringComparison.Ordinal);
        Assert.Contains(queue, final.Message, StringComparison.Ordinal);
    }
}
