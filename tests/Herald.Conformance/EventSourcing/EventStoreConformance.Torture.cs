using System.Collections.Concurrent;
using System.Diagnostics;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Messages;
using Xunit;

namespace Herald.Conformance.EventSourcing;

public abstract partial class EventStoreConformance
{
    /// <summary>Concurrent writers in the torture test; keep 16 even for a slow store.</summary>
    protected virtual int TortureWriters => 16;

    /// <summary>Appends each torture writer makes (1 to 3 events each); lower it for a slow store.</summary>
    protected virtual int TortureAppendsPerWriter => 32;

    /// <summary>Streams every torture writer also appends to, so writers contend.</summary>
    protected virtual int TortureSharedStreams => 4;

    /// <summary>
    /// Capability: the store can append inside a transaction it holds open (<see cref="BeginOpenAppendAsync"/>), to test that
    /// a subscription neither skips an event committed late nor ever delivers a rolled-back one. When false (the in-memory
    /// store, which has no transactions) the torture test runs without open transactions.
    /// </summary>
    protected virtual bool SupportsOpenTransactions => false;

    /// <summary>How many open transactions the torture test holds at once (half commit, half roll back).</summary>
    protected virtual int TortureOpenTransactions => 4;

    /// <summary>How long each open transaction is held; it simulates a slow unit of work.</summary>
    protected virtual TimeSpan OpenTransactionHold => TimeSpan.FromSeconds(2);

    /// <summary>The largest pause allowed between two deliveries while writes flow: the hold of an open transaction plus slack.</summary>
    protected virtual TimeSpan MaxDeliveryStall => (SupportsOpenTransactions ? OpenTransactionHold : TimeSpan.Zero) + TimeSpan.FromSeconds(5);

    /// <summary>
    /// Begins a transaction, appends <paramref name="events"/> inside it and returns while still holding it open, so later
    /// appends from other connections commit first. Return null when the store cannot (see <see cref="SupportsOpenTransactions"/>).
    /// </summary>
    protected virtual Task<IOpenAppend?> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        Task.FromResult<IOpenAppend?>(null);

    [Fact]
    public async Task Torture_ConcurrentWritersConflictsAndOpenTransactions_SubscriberSeesEveryCommittedEventExactlyOnceInOrder()
    {
        Assert.True(TortureWriters >= 2 && TortureAppendsPerWriter >= 6, "The torture test needs at least 2 writers and 6 appends per writer (every mode runs once per 6 appends).");
        var category = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var committed = new ConcurrentDictionary<Guid, byte>();
        var failed = new ConcurrentDictionary<Guid, byte>();
        var deliveries = new List<(long Position, Guid EventId, string Stream, long At)>();
        var idempotentRetries = 0;
        var conflicts = 0;

        await using var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, (recorded, _) =>
        {
            lock (deliveries)
            {
                deliveries.Add((recorded.Position, recorded.EventId, recorded.Stream, Stopwatch.GetTimestamp()));
            }

            return ValueTask.CompletedTask;
        }, new EventSubscriptionOptions { SubscriptionId = NewCategory(), StartAfterPosition = head, BatchSize = 64, CheckpointEvery = 50 });

        var halfway = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var appendsDone = 0;
        var totalAppends = TortureWriters * TortureAppendsPerWriter;
        var writesStarted = Stopwatch.GetTimestamp();

        async Task WriterAsync(int writer)
        {
            var random = new Random(writer);
            var own = $"{category}-w{writer}";
            long ownVersion = 0;
            (ExpectedVersion Expected, Envelope[] Events, AppendResult Result)? lastOwn = null;
            for (var i = 0; i < TortureAppendsPerWriter; i++)
            {
                var events = NewEvents(random.Next(1, 4), "torture-happened");
                var shared = $"{category}-s{random.Next(TortureSharedStreams)}";
                switch (i % 6)
                {
                    case 0:
                    case 1:
                    {
                        var expected = ExpectedVersion.FromLoadedVersion(ownVersion);
                        var result = await Store.AppendAsync(own, expected, events);
                        ownVersion = result.StreamVersion;
                        lastOwn = (expected, events, result);
                        Record(committed, events);
                        break;
                    }

                    case 2:
                        await Store.AppendAsync(shared, ExpectedVersion.Any, events);
                        Record(committed, events);
                        break;

                    case 3:
                    {
                        // Read-then-write on a contended stream: succeeds or conflicts, depending on the race.
                        var version = await Store.GetStreamVersionAsync(shared);
                        try
                        {
                            await Store.AppendAsync(shared, ExpectedVersion.FromLoadedVersion(version), events);
                            Record(committed, events);
                        }
                        catch (ConcurrencyException)
                        {
                            Record(failed, events);
                            Interlocked.Increment(ref conflicts);
                        }

                        break;
                    }

                    case 4:
                        // A conflict for certain: the writer's own stream already exists (or is not at version 1000).
                        await Assert.ThrowsAsync<ConcurrencyException>(() => Store.AppendAsync(
                            own, ownVersion == 0 ? ExpectedVersion.Exactly(1000) : ExpectedVersion.NoStream, events).AsTask());
                        Record(failed, events);
                        Interlocked.Increment(ref conflicts);
                        break;

                    default:
                        if (lastOwn is { } retry)
                        {
                            Assert.Equal(retry.Result, await Store.AppendAsync(own, retry.Expected, retry.Events));
                            Interlocked.Increment(ref idempotentRetries);
                        }

                        // Streams only grow here, so StreamExists holds once a stream has events.
                        var expectation = await Store.GetStreamVersionAsync(shared) > 0 ? ExpectedVersion.StreamExists : ExpectedVersion.Any;
                        await Store.AppendAsync(shared, expectation, events);
                        Record(committed, events);
                        break;
                }

                if (Interlocked.Increment(ref appendsDone) == Math.Max(1, totalAppends / 4))
                {
                    halfway.TrySetResult();
                }
            }
        }

        async Task OpenTransactionAsync(int index)
        {
            await halfway.Task;
            var events = NewEvents(2, "torture-held");
            var open = await BeginOpenAppendAsync($"{category}-open{index}", ExpectedVersion.NoStream, events);
            if (open is null)
            {
                return;
            }

            await using (open)
            {
                // Simulates a slow unit of work holding its transaction while other writers commit; not a wait for a result.
                await Task.Delay(OpenTransactionHold);
                if (index % 2 == 0)
                {
                    await open.CommitAsync();
                    Record(committed, events);
                }
                else
                {
                    await open.RollbackAsync();
                    Record(failed, events);
                }
            }
        }

        var writers = Enumerable.Range(0, TortureWriters).Select(w => Task.Run(() => WriterAsync(w))).ToList();
        var opens = SupportsOpenTransactions
            ? Enumerable.Range(0, TortureOpenTransactions).Select(i => Task.Run(() => OpenTransactionAsync(i))).ToList()
            : [];
        await Task.WhenAll(writers.Concat(opens));
        var writesEnded = Stopwatch.GetTimestamp();

        var finalHead = await Store.GetLastPositionAsync();
        await ReachAsync(subscription, finalHead);

        List<(long Position, Guid EventId, string Stream, long At)> delivered;
        lock (deliveries)
        {
            delivered = [.. deliveries];
        }

        for (var i = 1; i < delivered.Count; i++)
        {
            Assert.True(delivered[i].Position > delivered[i - 1].Position, $"delivery {i} at position {delivered[i].Position} follows {delivered[i - 1].Position}");
        }

        var mine = delivered.Where(d => StreamName.GetCategory(d.Stream) == category).ToList();
        var duplicates = mine.GroupBy(d => d.EventId).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(duplicates.Count == 0, $"{duplicates.Count} events were delivered more than once, e.g. {duplicates.FirstOrDefault()}");
        var leaked = mine.Where(d => failed.ContainsKey(d.EventId)).ToList();
        Assert.True(leaked.Count == 0, $"{leaked.Count} events of failed or rolled-back appends were delivered, e.g. {leaked.FirstOrDefault()}");
        var missing = committed.Keys.Except(mine.Select(d => d.EventId)).ToList();
        Assert.True(missing.Count == 0, $"{missing.Count} of {committed.Count} committed events were never delivered (skipped), e.g. {missing.FirstOrDefault()}");
        Assert.Equal(committed.Count, mine.Count);

        var log = await ReadAllAsync(head, EventFilter.ForCategory(category));
        Assert.Equal(mine.Select(d => d.EventId), log.Select(e => e.EventId));

        var flowing = mine.Where(d => d.At >= writesStarted && d.At <= writesEnded).Select(d => d.At).ToList();
        var stall = flowing.Count < 2 ? TimeSpan.Zero : flowing.Zip(flowing.Skip(1), (a, b) => Stopwatch.GetElapsedTime(a, b)).Max();
        Assert.True(stall <= MaxDeliveryStall, $"The subscriber waited {stall.TotalSeconds:0.0} s between two deliveries while writes were flowing (allowed: {MaxDeliveryStall.TotalSeconds:0.0} s).");
        var certainConflicts = TortureWriters * ((TortureAppendsPerWriter + 1) / 6);
        Assert.True(conflicts >= certainConflicts, $"only {conflicts} appends conflicted; at least {certainConflicts} had to");
        Assert.True(idempotentRetries > 0, "no idempotent retry ran");
    }

    private static void Record(ConcurrentDictionary<Guid, byte> into, Envelope[] events)
    {
        foreach (var envelope in events)
        {
            into[envelope.MessageId] = 0;
        }
    }
}
