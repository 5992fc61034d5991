using Herald.Conformance.Reliability;
using Herald.EventSourcing;
using Herald.Messages;
using Xunit;

namespace Herald.Conformance.EventSourcing;

public abstract partial class EventStoreConformance
{
    // Regression (stop 41): PostgreSQL kept an event's RecordedAt in UTC to the microsecond, SQLite kept every tick of the
    // store's clock and the in-memory store its offset too: an event read back differed per engine. Every engine now keeps
    // it as PostgreSQL does, appended alone or in a unit of work.
    [Fact]
    public async Task Append_AloneAndInAUnitOfWork_KeepsRecordedAtInUtcToTheMicrosecond_OnEveryEngine()
    {
        // Not a FakeTimeProvider: SQLite's group commit delay waits on the store's clock, and nothing here advances one.
        var recordedAt = TestEnvelopes.OffsetTimeWithTicks;
        var store = await CreateStoreAsync(new ClockShowing(recordedAt));
        try
        {
            var alone = NewStream();
            var inUnit = NewStream();

            await store.AppendAsync(alone, ExpectedVersion.NoStream, NewEvents(2));
            var unitOfWork = BeginUnitOfWork(store);
            await store.AppendAsync(inUnit, ExpectedVersion.NoStream, NewEvents(1), unitOfWork);
            await unitOfWork.CommitAsync();

            var events = (await ReadStreamAsync(store, alone)).Concat(await ReadStreamAsync(store, inUnit)).ToList();
            Assert.Equal(3, events.Count);
            Assert.All(events, e => TestEnvelopes.AssertKeptInUtcToTheMicrosecond(recordedAt, e.RecordedAt));

            Assert.Equal(TimeSpan.FromHours(2), recordedAt.Offset);
        }
        finally
        {
            await DisposeStoreAsync(store);
        }
    }

    [Fact]
    public async Task Append_WithNoStream_ToNewStream_StartsAtVersionOne()
    {
        var stream = NewStream();
        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(2));

        Assert.Equal(2, result.StreamVersion);
        var events = await ReadStreamAsync(stream);
        Assert.Equal([1L, 2L], events.Select(e => e.Version));
        Assert.Equal(events[^1].Position, result.LastPosition);
        Assert.Equal(2, await Store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task Append_WithNoStream_ToExistingStream_ThrowsAndWritesNothing()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));

        var ex = await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(2)).AsTask());

        Assert.Equal(stream, ex.Stream);
        Assert.True(ex.Expected.IsNoStream);
        Assert.Equal(1, ex.Actual);
        Assert.Single(await ReadStreamAsync(stream));
    }

    [Fact]
    public async Task Append_WithAny_ToNewAndExistingStream_Succeeds()
    {
        var stream = NewStream();
        var first = await Store.AppendAsync(stream, ExpectedVersion.Any, NewEvents(1));
        var second = await Store.AppendAsync(stream, ExpectedVersion.Any, NewEvents(2));

        Assert.Equal(1, first.StreamVersion);
        Assert.Equal(3, second.StreamVersion);
        Assert.Equal([1L, 2L, 3L], (await ReadStreamAsync(stream)).Select(e => e.Version));
    }

    [Fact]
    public async Task Append_WithStreamExists_ToExistingStream_Succeeds()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));

        var result = await Store.AppendAsync(stream, ExpectedVersion.StreamExists, NewEvents(1));

        Assert.Equal(2, result.StreamVersion);
    }

    [Fact]
    public async Task Append_WithStreamExists_ToMissingStream_ThrowsAndWritesNothing()
    {
        var stream = NewStream();

        var ex = await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.StreamExists, NewEvents(1)).AsTask());

        Assert.True(ex.Expected.IsStreamExists);
        Assert.Equal(0, ex.Actual);
        Assert.Empty(await ReadStreamAsync(stream));
        Assert.Equal(0, await Store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task Append_WithExactVersion_MatchingCurrent_Succeeds()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(3));

        var result = await Store.AppendAsync(stream, ExpectedVersion.Exactly(3), NewEvents(2));

        Assert.Equal(5, result.StreamVersion);
        Assert.Equal(5, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_WithStaleExpectedVersion_ThrowsAndWritesNothing()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(3));
        var before = await Store.GetLastPositionAsync();

        var ex = await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Exactly(2), NewEvents(4)).AsTask());

        Assert.Equal(2, ex.Expected.Value);
        Assert.Equal(3, ex.Actual);
        Assert.Equal(3, (await ReadStreamAsync(stream)).Count);
        Assert.Empty(await ReadAllAsync(before, EventFilter.ForCategory(StreamName.GetCategory(stream))));
    }

    [Fact]
    public async Task Append_WithExactVersion_ToMissingStream_ThrowsAndWritesNothing()
    {
        var stream = NewStream();

        var ex = await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Exactly(1), NewEvents(1)).AsTask());

        Assert.Equal(0, ex.Actual);
        Assert.Equal(0, await Store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task Append_WithExactVersionAheadOfStream_Throws()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));

        var ex = await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Exactly(5), NewEvents(1)).AsTask());

        Assert.Equal(1, ex.Actual);
        Assert.Single(await ReadStreamAsync(stream));
    }

    [Fact]
    public async Task Append_WithNoEvents_ReturnsCurrentVersionAndWritesNothing()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(2));
        var head = await Store.GetLastPositionAsync();

        var result = await Store.AppendAsync(stream, ExpectedVersion.Any, []);
        var missing = await Store.AppendAsync(NewStream(), ExpectedVersion.NoStream, []);

        Assert.Equal(2, result.StreamVersion);
        Assert.Equal(0, missing.StreamVersion);
        Assert.Equal(2, (await ReadStreamAsync(stream)).Count);
        Assert.Empty(await ReadAllAsync(head, EventFilter.ForCategory(StreamName.GetCategory(stream))));
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.NoStream, []).AsTask());
    }

    [Fact]
    public async Task Append_IdempotentRetryWithNoStream_SucceedsWithoutWritingTwice()
    {
        var stream = NewStream();
        var events = NewEvents(2);
        var original = await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);

        var retry = await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);

        Assert.Equal(original, retry);
        Assert.Equal(2, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_IdempotentRetryWithExactVersion_ReturnsOriginalResult()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));
        var events = NewEvents(2);
        var original = await Store.AppendAsync(stream, ExpectedVersion.Exactly(1), events);
        await Store.AppendAsync(stream, ExpectedVersion.Exactly(3), NewEvents(1));

        var retry = await Store.AppendAsync(stream, ExpectedVersion.Exactly(1), events);

        Assert.Equal(original, retry);
        Assert.Equal(4, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_IdempotentRetryWithAny_SucceedsWithoutWritingTwice()
    {
        var stream = NewStream();
        var events = NewEvents(3);
        var original = await Store.AppendAsync(stream, ExpectedVersion.Any, events);
        await Store.AppendAsync(stream, ExpectedVersion.Any, NewEvents(1));

        var retry = await Store.AppendAsync(stream, ExpectedVersion.Any, events);

        Assert.Equal(original, retry);
        Assert.Equal(4, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_IdempotentRetryWithStreamExists_SucceedsWithoutWritingTwice()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));
        var events = NewEvents(2);
        var original = await Store.AppendAsync(stream, ExpectedVersion.StreamExists, events);

        var retry = await Store.AppendAsync(stream, ExpectedVersion.StreamExists, events);

        Assert.Equal(original, retry);
        Assert.Equal(3, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_RetryOfOnlyTheFirstEventsOfABatch_IsIdempotent()
    {
        var stream = NewStream();
        var events = NewEvents(3);
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);

        var retry = await Store.AppendAsync(stream, ExpectedVersion.NoStream, events[..2]);

        Assert.Equal(2, retry.StreamVersion);
        Assert.Equal(3, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_SameIdsWithOtherContent_ThrowsAndWritesNothing()
    {
        var stream = NewStream();
        var events = NewEvents(2);
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);

        var otherBody = events.Select((e, i) => i == 1 ? e with { Body = "{\"n\":-1}"u8.ToArray() } : e).ToArray();
        var otherType = events.Select((e, i) => i == 0 ? e with { MessageType = "something-else" } : e).ToArray();
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.NoStream, otherBody).AsTask());
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Any, otherType).AsTask());

        var stored = await ReadStreamAsync(stream);
        Assert.Equal(2, stored.Count);
        Assert.Equal(events[1].Body.ToArray(), stored[1].Envelope.Body.ToArray());
    }

    [Fact]
    public async Task Append_SameIdsAtAnotherPlace_ThrowsAndWritesNothing()
    {
        var stream = NewStream();
        var events = NewEvents(2);
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);
        await Store.AppendAsync(stream, ExpectedVersion.Exactly(2), NewEvents(1));

        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Exactly(3), events).AsTask());
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Exactly(1), events).AsTask());

        Assert.Equal(3, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_BatchMixingStoredAndNewIds_ThrowsAndWritesNothing()
    {
        var stream = NewStream();
        var events = NewEvents(2);
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);

        var mixed = new[] { events[0], events[1], NewEvent() };
        var shifted = new[] { NewEvent(), events[0] };
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.NoStream, mixed).AsTask());
        await AssertConflictAsync(() => Store.AppendAsync(stream, ExpectedVersion.Exactly(2), shifted).AsTask());

        Assert.Equal(2, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_InvalidInput_ThrowsArgumentExceptionAndWritesNothing()
    {
        var stream = NewStream();
        var head = await Store.GetLastPositionAsync();
        var twice = NewEvent();

        foreach (var bad in new[] { "", " ", "order 42", "order-\t42", "order-\u000142", "$all", "$ce-order", new string('a', StreamName.MaxLength + 1) })
        {
            await Assert.ThrowsAnyAsync<ArgumentException>(() => Store.AppendAsync(bad, ExpectedVersion.Any, NewEvents(1)).AsTask());
        }

        await Assert.ThrowsAnyAsync<ArgumentException>(() => Store.AppendAsync(stream, ExpectedVersion.Any, [twice, twice]).AsTask());
        await Assert.ThrowsAnyAsync<ArgumentException>(() => Store.AppendAsync(stream, ExpectedVersion.Any, [NewEvent() with { MessageId = Guid.Empty }]).AsTask());
        await Assert.ThrowsAnyAsync<ArgumentException>(() => Store.AppendAsync(stream, default, NewEvents(1)).AsTask());

        Assert.Equal(0, await Store.GetStreamVersionAsync(stream));
        Assert.Empty(await ReadAllAsync(head, EventFilter.ForCategory(StreamName.GetCategory(stream))));
    }

    [Fact]
    public async Task Append_ToANameWithAnUnpairedSurrogate_IsRefused_WhileAPairIsStoredAsWritten()
    {
        // A half of a surrogate pair (an id cut in the middle of an emoji) is stored by SQLite as U+FFFD, so two such names
        // would share one stream there; every engine refuses it instead, naming the problem.
        var category = NewCategory();
        foreach (var bad in new[] { $"{category}-a\uD83D", $"{category}-a\uDE00b", $"{category}-\uDE00\uD83D" })
        {
            var ex = await Assert.ThrowsAnyAsync<ArgumentException>(() => Store.AppendAsync(bad, ExpectedVersion.Any, NewEvents(1)).AsTask());
            Assert.Contains("surrogate", ex.Message, StringComparison.Ordinal);
            Assert.DoesNotContain('\uD83D', ex.Message);
        }

        var paired = $"{category}-a\uD83D\uDE00";
        Assert.Equal(1, (await Store.AppendAsync(paired, ExpectedVersion.NoStream, NewEvents(1))).StreamVersion);
        Assert.Equal(paired, (await ReadStreamAsync(paired)).Single().Stream);
    }

    /// <summary>The envelope's text attributes an append stores, by the name its refusal gives them.</summary>
    public static TheoryData<string> EnvelopeTextAttributes => ["message type", "correlation id", "causation id", "user id", "partition key", "content type", "header name", "header value"];

    [Theory]
    [MemberData(nameof(EnvelopeTextAttributes))]
    public async Task Append_OfAnEventWhoseTextHoldsHalfOfASurrogatePair_IsRefusedNamingStreamAndField_AndWritesNothing(string field)
    {
        // Half of a surrogate pair (a value cut inside an emoji) is no text UTF-8 can hold: SQLite stored it as U+FFFD (the
        // event read back altered), PostgreSQL's client failed with a bare EncoderFallbackException (and with it every append
        // grouped in the same commit), memory kept it. Every engine now refuses it, naming the stream, event and field.
        var stream = NewStream();
        var good = NewEvents(1)[0];
        var bad = WithText(good, field, "order-placed\uD83D");

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await Store.AppendAsync(stream, ExpectedVersion.NoStream, [NewEvents(1)[0], bad]));

        Assert.Equal("events", refused.ParamName);
        Assert.Contains($"The {field} 'order-placed?' of event {bad.MessageId} of the append to '{stream}' holds half of a surrogate pair", refused.Message, StringComparison.Ordinal);
        Assert.Equal(0, await Store.GetStreamVersionAsync(stream));

        var paired = good with { CorrelationId = "order-\uD83D\uDE00", Headers = new Dictionary<string, string> { ["\uD83D\uDE00"] = "\uD83D\uDE00" } };
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, [paired]);
        AssertSameEnvelope(paired, (await ReadStreamAsync(stream)).Single().Envelope);
    }

    [Fact]
    public async Task Append_LongestValidNameAndCategoryIdNames_AreAccepted()
    {
        var category = NewCategory();
        var longest = category + "-" + new string('x', StreamName.MaxLength - category.Length - 1);
        foreach (var stream in new[] { longest, $"{category}-42", $"{category}-{Guid.NewGuid()}", $"{category}-a.b_c:d/e" })
        {
            var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));
            Assert.Equal(1, result.StreamVersion);
            Assert.Equal(stream, (await ReadStreamAsync(stream)).Single().Stream);
        }
    }

    [Fact]
    public async Task Append_OversizedEvent_ThrowsAndWritesNothing()
    {
        var stream = NewStream();
        var oversized = NewEvent() with { Body = new byte[MaxEventBytes + 1], ContentType = "application/octet-stream" };
        var atLimit = NewEvent() with { Body = new byte[MaxEventBytes], ContentType = "application/octet-stream" };

        var ex = await Assert.ThrowsAnyAsync<ArgumentException>(() => Store.AppendAsync(stream, ExpectedVersion.Any, [NewEvent(), oversized]).AsTask());

        Assert.Contains(oversized.MessageId.ToString(), ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, await Store.GetStreamVersionAsync(stream));
        Assert.Equal(1, (await Store.AppendAsync(stream, ExpectedVersion.NoStream, [atLimit])).StreamVersion);
    }

    [Fact]
    public async Task Append_ConcurrentWritersWithAnyOnOneStream_AllSucceedWithContiguousVersions()
    {
        var stream = NewStream();
        const int Writers = 16;
        const int AppendsEach = 5;

        var results = await Task.WhenAll(Enumerable.Range(0, Writers).Select(_ => Task.Run(async () =>
        {
            var versions = new List<long>();
            for (var i = 0; i < AppendsEach; i++)
            {
                versions.Add((await Store.AppendAsync(stream, ExpectedVersion.Any, NewEvents(1))).StreamVersion);
            }

            return versions;
        })));

        var events = await ReadStreamAsync(stream);
        Assert.Equal(Enumerable.Range(1, Writers * AppendsEach).Select(v => (long)v), events.Select(e => e.Version));
        Assert.Equal(Writers * AppendsEach, results.SelectMany(r => r).Distinct().Count());
        Assert.Equal(Writers * AppendsEach, events.Select(e => e.EventId).Distinct().Count());
    }

    [Fact]
    public async Task Append_ConcurrentWritersWithTheSameExpectedVersion_ExactlyOneWins()
    {
        var stream = NewStream();
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));
        const int Writers = 16;

        var outcomes = await Task.WhenAll(Enumerable.Range(0, Writers).Select(_ => Task.Run(async () =>
        {
            try
            {
                await Store.AppendAsync(stream, ExpectedVersion.Exactly(1), NewEvents(2));
                return true;
            }
            catch (ConcurrencyException)
            {
                return false;
            }
        })));

        Assert.Equal(1, outcomes.Count(won => won));
        Assert.Equal(3, (await ReadStreamAsync(stream)).Count);
    }

    [Fact]
    public async Task Append_EnvelopeMetadata_RoundTripsExactly()
    {
        var stream = NewStream();
        var json = NewEvent("order-placed", "{ \"b\" : 1,\n  \"a\": [true, null] }", schemaVersion: 4) with
        {
            CorrelationId = "corr-1",
            CausationId = "cause-2",
            UserId = "user-3",
            PartitionKey = "partition-4",
            Time = new DateTimeOffset(2026, 7, 8, 9, 10, 11, 123, TimeSpan.FromHours(2)),
            Headers = new Dictionary<string, string>(StringComparer.Ordinal) { ["traceparent"] = "00-abc-def-01", ["x-empty"] = "", ["X-Case"] = "Ü" },
        };
        var binary = NewEvent("blob-stored") with { ContentType = "application/octet-stream", Body = new byte[] { 0, 255, 1, 254, 0 } };
        var empty = NewEvent("nothing-said") with { Body = ReadOnlyMemory<byte>.Empty };

        await Store.AppendAsync(stream, ExpectedVersion.NoStream, [json, binary, empty]);

        var stored = await ReadStreamAsync(stream);
        Assert.Equal(3, stored.Count);
        AssertSameEnvelope(json, stored[0].Envelope);
        AssertSameEnvelope(binary, stored[1].Envelope);
        AssertSameEnvelope(empty, stored[2].Envelope);
        Assert.Equal(json.MessageId, stored[0].EventId);
        Assert.Equal("order-placed", stored[0].EventType);
        Assert.All(stored, e => Assert.NotEqual(default, e.RecordedAt));

        var fromAll = await ReadAllAsync(stored[0].Position - 1, EventFilter.ForCategory(StreamName.GetCategory(stream)));
        AssertSameEnvelope(json, fromAll[0].Envelope);
    }
}
