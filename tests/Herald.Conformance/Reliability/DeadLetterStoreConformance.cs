using System.Globalization;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Reliability;

/// <summary>
/// The contract of <see cref="IDeadLetterStore"/>. A store's test project derives from it and implements
/// <see cref="CreateStoreAsync"/> over its real engine. Every test works on an endpoint of its own, so the suite can run
/// against a database other runs share.
/// </summary>
public abstract partial class DeadLetterStoreConformance
{
    private static readonly DateTimeOffset BaseTime = new(2030, 1, 2, 3, 4, 5, 678, TimeSpan.Zero);

    /// <summary>Creates the store under test (a fresh one, or one over a shared database).</summary>
    protected abstract ValueTask<IDeadLetterStore> CreateStoreAsync();

    /// <summary>A dead letter with every field set, of a unique endpoint unless one is given (the engines' own dead-letter tests use it too).</summary>
    public static DeadLetter NewDeadLetter(
        string? endpoint = null,
        string messageType = "conformance-message",
        string fingerprint = "fp-1",
        DateTimeOffset? failedAt = null,
        DeadLetterCause cause = DeadLetterCause.RetriesExhausted)
    {
        var last = failedAt ?? BaseTime;
        return new DeadLetter
        {
            Id = Guid.CreateVersion7(last),
            Envelope = TestEnvelopes.Create(messageType, BaseTime.AddMinutes(-5)),
            Endpoint = endpoint ?? UniqueEndpoint(),
            Cause = cause,
            ErrorType = "System.InvalidOperationException",
            ErrorMessage = "The warehouse scanner is busy: ünïcode ok",
            StackTrace = "   at Orders.ReserveStock.HandleAsync()\n   at Herald.Handling.HandlerInvoker`1.InvokeAsync()",
            Fingerprint = fingerprint,
            FirstFailureTime = last.AddSeconds(-30),
            LastFailureTime = last,
            AttemptCount = 6,
        };
    }

    /// <summary>An endpoint name no other test uses.</summary>
    protected static string UniqueEndpoint() => "conformance-" + Guid.NewGuid().ToString("N");

    [Fact]
    public async Task Add_ThenGet_ReturnsEveryFieldWithTheEnvelopeUnchanged()
    {
        var store = await CreateStoreAsync();
        var deadLetter = NewDeadLetter() with { RetryCount = 2, LastRetryError = "earlier: broker down", LastRetryTime = BaseTime.AddMinutes(1) };

        await store.AddAsync(deadLetter);
        var read = await store.GetAsync(deadLetter.Id);

        Assert.NotNull(read);
        AssertEqual(deadLetter, read);
    }

    // PostgreSQL and SQLite kept the envelope's time in UTC to the microsecond, the in-memory store kept it as given: a dead
    // letter read back differed per engine. Every engine now keeps it as PostgreSQL does.
    [Fact]
    public async Task Add_KeepsTheEnvelopesTimeInUtcToTheMicrosecond_OnEveryEngine()
    {
        var store = await CreateStoreAsync();
        var deadLetter = NewDeadLetter();
        deadLetter = deadLetter with { Envelope = deadLetter.Envelope with { Time = TestEnvelopes.OffsetTimeWithTicks } };

        Assert.True(await store.AddAsync(deadLetter));

        TestEnvelopes.AssertKeptInUtcToTheMicrosecond((await store.GetAsync(deadLetter.Id))!.Envelope.Time);
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond(Assert.Single(await store.ListAsync(new DeadLetterQuery { Endpoint = deadLetter.Endpoint })).Envelope.Time);
    }

    // Regression (stop 41): PostgreSQL kept a dead letter's own times in UTC to the microsecond, SQLite and the in-memory
    // store kept the caller's offset and every tick: a dead letter read back differed per engine. Every engine now keeps
    // them as PostgreSQL does, the retry failure's time too.
    [Fact]
    public async Task Add_AndRecordRetryFailure_KeepTheDeadLettersOwnTimesInUtcToTheMicrosecond_OnEveryEngine()
    {
        var store = await CreateStoreAsync();
        var at = TestEnvelopes.OffsetTimeWithTicks;
        var deadLetter = NewDeadLetter() with { FirstFailureTime = at, LastFailureTime = at, RetryCount = 1, LastRetryError = "broker down", LastRetryTime = at };
        var retried = NewDeadLetter(deadLetter.Endpoint);

        Assert.True(await store.AddAsync(deadLetter));
        Assert.True(await store.AddAsync(retried));
        Assert.True(await store.RecordRetryFailureAsync(retried.Id, "broker down again", at));

        var read = (await store.GetAsync(deadLetter.Id))!;
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond(read.FirstFailureTime);
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond(read.LastFailureTime);
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond(read.LastRetryTime!.Value);
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond((await store.GetAsync(retried.Id))!.LastRetryTime!.Value);
        Assert.All(await store.ListAsync(new DeadLetterQuery { Endpoint = deadLetter.Endpoint }), listed => Assert.Equal(TimeSpan.Zero, listed.FirstFailureTime.Offset));
    }

    [Fact]
    public async Task Add_WithoutOptionalFields_RoundTripsThemAsNull()
    {
        var store = await CreateStoreAsync();
        var deadLetter = NewDeadLetter() with
        {
            StackTrace = null,
            Envelope = TestEnvelopes.Create(partitionKey: null) with { CorrelationId = null, CausationId = null, UserId = null, Body = ReadOnlyMemory<byte>.Empty },
        };

        await store.AddAsync(deadLetter);
        var read = await store.GetAsync(deadLetter.Id);

        Assert.NotNull(read);
        AssertEqual(deadLetter, read);
    }

    [Theory]
    [InlineData(DeadLetterOrigin.Endpoint)]
    [InlineData(DeadLetterOrigin.Projection)]
    [InlineData(DeadLetterOrigin.EventSubscription)]
    [InlineData(DeadLetterOrigin.StreamProcessor)]
    public async Task Add_ThenGetAndList_KeepsTheOriginItsEnvelopeNames(DeadLetterOrigin origin)
    {
        // The origin decides what a retry does (a projection's event goes back to the projection, never to a queue of its name).
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var deadLetter = NewDeadLetter() with
        {
            Endpoint = endpoint,
            Envelope = origin == DeadLetterOrigin.Endpoint ? TestEnvelopes.Create() : TestEnvelopes.Create().WithHeader(HeaderNames.DeadLetterOrigin, origin.ToString()),
        };

        await store.AddAsync(deadLetter);

        Assert.Equal(origin, (await store.GetAsync(deadLetter.Id))!.Origin);
        Assert.Equal(origin, Assert.Single(await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Origin);
    }

    [Fact]
    public async Task Get_OfAnUnknownId_ReturnsNull()
    {
        var store = await CreateStoreAsync();

        Assert.Null(await store.GetAsync(Guid.CreateVersion7()));
    }

    [Fact]
    public async Task Queries_ForAnEndpointHoldingU0000_MatchNothing()
    {
        // No dead letter has such an endpoint on PostgreSQL (its text cannot hold U+0000), which answered with a bare 22021.
        var store = await CreateStoreAsync();
        var query = new DeadLetterQuery { Endpoint = "orders-" + Guid.NewGuid().ToString("N") + "\0" };

        Assert.Empty(await store.ListAsync(query));
        Assert.Equal(0, await store.CountAsync(query));
        Assert.Equal(0, await store.CountAsync(query with { MessageType = "orders.placed" }));
        Assert.Equal(0, await store.DeleteManyAsync(query));
    }

    [Fact]
    public async Task Add_OfAnIdThatExists_LeavesTheFirstRecord()
    {
        var store = await CreateStoreAsync();
        var first = NewDeadLetter();

        await store.AddAsync(first);
        await store.AddAsync(first with { ErrorMessage = "second write" });

        Assert.Equal(first.ErrorMessage, (await store.GetAsync(first.Id))!.ErrorMessage);
        Assert.Equal(1, await store.CountAsync(new DeadLetterQuery { Endpoint = first.Endpoint }));
    }

    // The pipeline counts herald.messages.dead_lettered by this answer: a redelivery whose dead letter the store held already
    // was counted as a second dead letter, overstating the metric (and anything alerting on it).
    [Fact]
    public async Task Add_OfTheSameDeadLetterTwice_ReportsTrueThenFalse()
    {
        var store = await CreateStoreAsync();
        var deadLetter = NewDeadLetter();

        Assert.True(await store.AddAsync(deadLetter));
        Assert.False(await store.AddAsync(deadLetter));
        Assert.False(await store.AddAsync(deadLetter with { ErrorMessage = "second write" }));
        Assert.True(await store.AddAsync(NewDeadLetter(deadLetter.Endpoint)));

        Assert.Equal(2, await store.CountAsync(new DeadLetterQuery { Endpoint = deadLetter.Endpoint }));
    }

    [Fact]
    public async Task Causes_RoundTripEveryValue()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var written = Enum.GetValues<DeadLetterCause>().Select(cause => NewDeadLetter(endpoint, cause: cause)).ToList();

        foreach (var deadLetter in written)
        {
            await store.AddAsync(deadLetter);
        }

        foreach (var deadLetter in written)
        {
            Assert.Equal(deadLetter.Cause, (await store.GetAsync(deadLetter.Id))!.Cause);
        }
    }

    [Fact]
    public async Task List_FiltersByEndpoint()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var mine = new[] { NewDeadLetter(endpoint), NewDeadLetter(endpoint) };
        await AddAllAsync(store, [.. mine, NewDeadLetter()]);

        var listed = await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint });

        Assert.Equal(Ids(mine), listed.Select(d => d.Id).Order());
    }

    [Fact]
    public async Task List_FiltersByMessageType()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var wanted = NewDeadLetter(endpoint, messageType: "order-placed");
        await AddAllAsync(store, [wanted, NewDeadLetter(endpoint, messageType: "order-shipped"), NewDeadLetter(endpoint, messageType: "ORDER-PLACED")]);

        var listed = await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, MessageType = "order-placed" });

        Assert.Equal(wanted.Id, Assert.Single(listed).Id);
    }

    [Fact]
    public async Task List_FiltersByFingerprint()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var wanted = new[] { NewDeadLetter(endpoint, fingerprint: "aaa"), NewDeadLetter(endpoint, fingerprint: "aaa") };
        await AddAllAsync(store, [.. wanted, NewDeadLetter(endpoint, fingerprint: "bbb")]);

        var listed = await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, Fingerprint = "aaa" });

        Assert.Equal(Ids(wanted), listed.Select(d => d.Id).Order());
    }

    [Fact]
    public async Task List_FiltersByLastFailureTime_FromInclusiveBeforeExclusive()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var early = NewDeadLetter(endpoint, failedAt: BaseTime);
        var atFrom = NewDeadLetter(endpoint, failedAt: BaseTime.AddMinutes(10));
        var inside = NewDeadLetter(endpoint, failedAt: BaseTime.AddMinutes(15));
        var atBefore = NewDeadLetter(endpoint, failedAt: BaseTime.AddMinutes(20));
        await AddAllAsync(store, [early, atFrom, inside, atBefore]);

        var listed = await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, FailedFrom = BaseTime.AddMinutes(10), FailedBefore = BaseTime.AddMinutes(20) });

        Assert.Equal(Ids([atFrom, inside]), listed.Select(d => d.Id).Order());
    }

    // A filter's time may lie between two microseconds (the clock's ticks are 100 ns) while every engine keeps a failure time
    // to the microsecond: PostgreSQL cut the bound to the microsecond before comparing, so a dead letter that failed in
    // the bound's microsecond, before it, passed "from" and failed "before", the opposite of the other engines.
    [Fact]
    public async Task List_FiltersByLastFailureTime_WithBoundsBetweenMicroseconds_AsTheStoredTimesCompare()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var deadLetter = NewDeadLetter(endpoint, failedAt: BaseTime);
        await store.AddAsync(deadLetter);
        var justAfter = BaseTime.AddTicks(5);
        var justBefore = BaseTime.AddTicks(-5);

        Assert.Single(await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, FailedBefore = justAfter }));
        Assert.Empty(await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, FailedFrom = justAfter }));
        Assert.Single(await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, FailedFrom = justBefore }));
        Assert.Empty(await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint, FailedBefore = justBefore }));
        Assert.Equal(1, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint, FailedBefore = justAfter }));
        Assert.Equal(0, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint, FailedFrom = justAfter }));
        Assert.Equal(0, await store.DeleteManyAsync(new DeadLetterQuery { Endpoint = endpoint, FailedFrom = justAfter }));
        Assert.Equal(1, await store.DeleteManyAsync(new DeadLetterQuery { Endpoint = endpoint, FailedBefore = justAfter }));
    }

    // An exception's message that cuts its input with a Substring can end in half of a surrogate pair, which UTF-8 cannot
    // encode: PostgreSQL's client refused the whole dead letter (EncoderFallbackException), so the message went to the
    // transport's own dead letters, and their drain failed on it for ever.
    [Fact]
    public async Task Add_OfErrorAndEnvelopeTextsWithLoneSurrogates_KeepsTheRecord_AndFiltersFindIt()
    {
        var store = await CreateStoreAsync();
        var original = NewDeadLetter(messageType: "orders.placed-\uDE00", fingerprint: "fp-\uD83D");
        var deadLetter = original with
        {
            ErrorType = "Orders.Bad\uD83DInput",
            ErrorMessage = "Cannot parse 'ab\uD83D' as a quantity",
            StackTrace = "   at Orders.Parse(\uDE00)",
            Envelope = original.Envelope with { CorrelationId = "corr-\uD83D", UserId = "\uDE00ann" },
        };

        var read = await AddWithRetryFailureAndAssertErrorsReadableAsync(store, deadLetter, "send failed: '\uD83D'");
        Assert.Equal(Readable(deadLetter.Envelope.CorrelationId), Readable(read.Envelope.CorrelationId));
        Assert.Equal(Readable(deadLetter.Envelope.UserId), Readable(read.Envelope.UserId));
        var query = new DeadLetterQuery { Endpoint = deadLetter.Endpoint, MessageType = deadLetter.MessageType, Fingerprint = deadLetter.Fingerprint };
        Assert.Equal(deadLetter.Id, Assert.Single(await store.ListAsync(query)).Id);
        Assert.Equal(1, await store.CountAsync(query));
        Assert.Equal(1, await store.DeleteManyAsync(query));
    }

    [Fact]
    public async Task List_PagesInIdOrder_WithoutGapsOrRepeats()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var all = Enumerable.Range(0, 7).Select(_ => NewDeadLetter(endpoint)).ToList();
        await AddAllAsync(store, all.AsEnumerable().Reverse());

        var seen = new List<Guid>();
        var query = new DeadLetterQuery { Endpoint = endpoint, Limit = 3 };
        var pages = 0;
        while (true)
        {
            var page = await store.ListAsync(query);
            Assert.True(page.Count <= 3, $"a page holds at most the limit, got {page.Count}");
            seen.AddRange(page.Select(d => d.Id));
            pages++;
            if (page.Count < query.Limit)
            {
                break;
            }

            query = query with { After = page[^1].Id };
        }

        Assert.Equal(Ids(all), seen);
        Assert.Equal(3, pages);
    }

    [Fact]
    public async Task Count_AppliesEveryFilterButNotTheLimit()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        await AddAllAsync(store, [
            NewDeadLetter(endpoint, fingerprint: "x"),
            NewDeadLetter(endpoint, fingerprint: "x"),
            NewDeadLetter(endpoint, fingerprint: "x"),
            NewDeadLetter(endpoint, fingerprint: "y"),
        ]);

        Assert.Equal(4, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint, Limit = 1 }));
        Assert.Equal(3, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint, Fingerprint = "x" }));
        Assert.Equal(0, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint, MessageType = "nothing-like-it" }));
    }

    // Issue 16: a store may keep counts beside the rows (so a count does not read every row); they must stay exact. (The
    // suite may share its database, so only an endpoint of the test's own is counted.)
    [Fact]
    public async Task Count_OfAnEndpoint_StaysExactThroughAddRetryDeleteAndPurge()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var other = UniqueEndpoint();
        var letters = Enumerable.Range(0, 12).Select(i => NewDeadLetter(endpoint, fingerprint: i % 3 == 0 ? "purge" : "keep")).ToList();
        await AddAllAsync(store, [.. letters, NewDeadLetter(other)]);
        await store.AddAsync(letters[0] with { ErrorMessage = "a redelivered write" });
        Assert.Equal(12, await CountListedAsync(store, endpoint));
        Assert.Equal(12, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));

        Assert.True(await store.RecordRetryFailureAsync(letters[1].Id, "broker down", BaseTime.AddHours(1)));
        Assert.Equal(12, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));

        var manager = new DeadLetterManager(store, new Herald.Transport.InMemory.InMemoryTransport(), new FixedClock(BaseTime.AddDays(1)));
        Assert.Equal(DeadLetterRetryOutcome.Retried, await manager.RetryAsync(letters[2].Id));
        Assert.Equal(DeadLetterRetryOutcome.NotFound, await manager.RetryAsync(letters[2].Id));
        Assert.True(await store.DeleteAsync(letters[4].Id));
        Assert.False(await store.DeleteAsync(letters[4].Id));
        Assert.Equal(10, await CountListedAsync(store, endpoint));
        Assert.Equal(10, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));

        Assert.Equal(4, await manager.PurgeAsync(new DeadLetterQuery { Endpoint = endpoint, Fingerprint = "purge" }));
        Assert.Equal(6, await CountListedAsync(store, endpoint));
        Assert.Equal(6, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));
        Assert.Equal(1, await store.CountAsync(new DeadLetterQuery { Endpoint = other }));

        Assert.Equal(6, await manager.PurgeAsync(new DeadLetterQuery { Endpoint = endpoint }));
        Assert.Equal(0, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));
        Assert.Equal(0, await store.CountAsync(new DeadLetterQuery { Endpoint = UniqueEndpoint() }));
    }

    [Fact]
    public async Task Count_OfAnEndpoint_IsExactAfterConcurrentAddsAndDeletes()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var letters = Enumerable.Range(0, 160).Select(_ => NewDeadLetter(endpoint)).ToList();

        // Eight writers, each adding its share twice over (the second write of an id changes nothing) and deleting every
        // fourth of what it added, all at once.
        await Task.WhenAll(Enumerable.Range(0, 8).Select(w => Task.Run(async () =>
        {
            var mine = letters.Where((_, i) => i % 8 == w).ToList();
            foreach (var letter in mine)
            {
                await store.AddAsync(letter);
                await store.AddAsync(letter);
            }

            foreach (var letter in mine.Where((_, i) => i % 4 == 0))
            {
                Assert.True(await store.DeleteAsync(letter.Id));
            }
        })));

        Assert.Equal(120, await CountListedAsync(store, endpoint));
        Assert.Equal(120, await store.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));
    }

    private static async Task<int> CountListedAsync(IDeadLetterStore store, string endpoint)
    {
        var count = 0;
        var query = new DeadLetterQuery { Endpoint = endpoint, Limit = DeadLetterQuery.MaxLimit };
        while (true)
        {
            var page = await store.ListAsync(query);
            count += page.Count;
            if (page.Count < query.Limit)
            {
                return count;
            }

            query = query with { After = page[^1].Id };
        }
    }

    [Fact]
    public async Task Delete_RemovesOneAndReportsWhetherItExisted()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var gone = NewDeadLetter(endpoint);
        var kept = NewDeadLetter(endpoint);
        await AddAllAsync(store, [gone, kept]);

        Assert.True(await store.DeleteAsync(gone.Id));
        Assert.False(await store.DeleteAsync(gone.Id));

        Assert.Null(await store.GetAsync(gone.Id));
        Assert.NotNull(await store.GetAsync(kept.Id));
    }

    [Fact]
    public async Task DeleteMany_RemovesOnlyMatchingRecords_LowestIdsFirst_AtMostTheLimit()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var matching = Enumerable.Range(0, 5).Select(_ => NewDeadLetter(endpoint, fingerprint: "purge")).ToList();
        var other = NewDeadLetter(endpoint, fingerprint: "keep");
        await AddAllAsync(store, [.. matching, other]);
        var query = new DeadLetterQuery { Endpoint = endpoint, Fingerprint = "purge", Limit = 2 };

        Assert.Equal(2, await store.DeleteManyAsync(query));

        var left = (await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Select(d => d.Id).ToList();
        Assert.Equal(Ids(matching).Skip(2).Append(other.Id).Order(), left.Order());
        Assert.Equal(3, await store.DeleteManyAsync(query with { Limit = 10 }));
        Assert.Equal(0, await store.DeleteManyAsync(query));
        Assert.Equal(other.Id, Assert.Single(await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Id);
    }

    [Fact]
    public async Task RecordRetryFailure_RaisesTheRetryCount_AndKeepsTheOriginalError()
    {
        var store = await CreateStoreAsync();
        var deadLetter = NewDeadLetter();
        await store.AddAsync(deadLetter);

        Assert.True(await store.RecordRetryFailureAsync(deadLetter.Id, "first: broker down", BaseTime.AddHours(1)));
        Assert.True(await store.RecordRetryFailureAsync(deadLetter.Id, "second: still down", BaseTime.AddHours(2)));

        var read = (await store.GetAsync(deadLetter.Id))!;
        Assert.Equal(2, read.RetryCount);
        Assert.Equal("second: still down", read.LastRetryError);
        Assert.Equal(BaseTime.AddHours(2), read.LastRetryTime);
        Assert.Equal(deadLetter.ErrorMessage, read.ErrorMessage);
        Assert.Equal(deadLetter.ErrorType, read.ErrorType);
        Assert.Equal(deadLetter.LastFailureTime, read.LastFailureTime);
    }

    [Fact]
    public async Task Add_OfAnErrorWithNulCharacters_KeepsTheRecordWithItsError()
    {
        // An exception message that echoes its input can hold NUL characters, which PostgreSQL's text refuses: the store
        // failed the write, the message went to the transport's own dead letters, and their drain failed on it for ever.
        var store = await CreateStoreAsync();
        var deadLetter = NewDeadLetter() with
        {
            ErrorType = "Orders.Bad\0Input",
            ErrorMessage = "Cannot parse 'a\0b' as a quantity",
            StackTrace = "   at Orders.Parse(\0)",
            Fingerprint = "fp\0",
        };

        await AddWithRetryFailureAndAssertErrorsReadableAsync(store, deadLetter, "send failed: '\0'");
    }

    [Fact]
    public async Task Add_OfAHeaderWithNulCharacters_KeepsItAsWritten_ThroughListGetAndRetry()
    {
        // A header's key or value can hold NUL (a broker passes any string on), which PostgreSQL's jsonb refuses: the store
        // failed the write, the message went to the transport's own dead letters, and their drain failed on it for ever.
        var store = await CreateStoreAsync();
        var original = NewDeadLetter();
        var headers = new Dictionary<string, string>(original.Envelope.Headers, StringComparer.Ordinal)
        {
            ["x-bad\0key"] = "a\0b\0",
            ["\0"] = "",
            ["x-plain"] = "\0",
        };
        var deadLetter = original with { Envelope = original.Envelope with { Headers = headers } };

        await store.AddAsync(deadLetter);

        AssertEqual(deadLetter, (await store.GetAsync(deadLetter.Id))!);
        AssertEqual(deadLetter, Assert.Single(await store.ListAsync(new DeadLetterQuery { Endpoint = deadLetter.Endpoint })));

        var transport = new RecordingTransport(new Herald.Transport.InMemory.InMemoryTransport());
        var manager = new DeadLetterManager(store, transport, TimeProvider.System);
        Assert.Equal(DeadLetterRetryOutcome.Retried, await manager.RetryAsync(deadLetter.Id));
        var (destination, sent) = Assert.Single(transport.Sent);
        Assert.Equal(deadLetter.Endpoint, destination);
        Assert.Equal("a\0b\0", sent.Headers["x-bad\0key"]);
        Assert.Equal("", sent.Headers["\0"]);
        Assert.Equal("\0", sent.Headers["x-plain"]);
        Assert.Null(await store.GetAsync(deadLetter.Id));
    }

    [Fact]
    public async Task Add_OfAnEnvelopeWithNulInItsTextAttributes_KeepsTheRecord()
    {
        // A broker passes any string on as a correlation id, user id or content type, and PostgreSQL's text refuses NUL:
        // such a dead letter could not be stored at all, only wait in the transport's own dead letters.
        var store = await CreateStoreAsync();
        var original = NewDeadLetter();
        var deadLetter = original with
        {
            Envelope = original.Envelope with
            {
                MessageType = "orders.placed\0",
                CorrelationId = "corr\0",
                CausationId = "\0",
                UserId = "ann\0bob",
                PartitionKey = "key\0",
                ContentType = "application/json\0",
            },
        };

        await store.AddAsync(deadLetter);

        // Kept as written, or with each NUL as U+FFFD where the engine cannot keep it.
        var read = (await store.GetAsync(deadLetter.Id))!.Envelope;
        var written = deadLetter.Envelope;
        Assert.Equal(Readable(written.MessageType), Readable(read.MessageType));
        Assert.Equal(Readable(written.CorrelationId), Readable(read.CorrelationId));
        Assert.Equal(Readable(written.CausationId), Readable(read.CausationId));
        Assert.Equal(Readable(written.UserId), Readable(read.UserId));
        Assert.Equal(Readable(written.PartitionKey), Readable(read.PartitionKey));
        Assert.Equal(Readable(written.ContentType), Readable(read.ContentType));
        Assert.Equal(written.Body.ToArray(), read.Body.ToArray());
        Assert.Single(await store.ListAsync(new DeadLetterQuery { Endpoint = deadLetter.Endpoint }));
    }

    [Fact]
    public async Task Retry_OfADeadLetterNotYetDue_KeepsItsDueTime_SendingItWithTheTimeLeft_OrAtOnceWhenPast()
    {
        // A saga timeout or scheduled message the outbox relay gave up on before it was due: the store keeps its due time, and
        // a retry waits for it instead of delivering early.
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var notDue = DueAt(NewDeadLetter(endpoint, cause: DeadLetterCause.SendRejected), BaseTime.AddHours(2));
        var pastDue = DueAt(NewDeadLetter(endpoint, cause: DeadLetterCause.SendRejected), BaseTime.AddMinutes(10));
        await AddAllAsync(store, [notDue, pastDue]);
        AssertEqual(notDue, (await store.GetAsync(notDue.Id))!);

        var clock = new FakeTimeProvider(BaseTime.AddMinutes(30));
        var transport = new RecordingTransport(new Herald.Transport.InMemory.InMemoryTransport(Herald.Transport.InMemory.InMemoryTransportOptions.Default, clock));
        var manager = new DeadLetterManager(store, transport, clock);
        Assert.Equal(new DeadLetterRetryResult(2, 0), await manager.RetryAllAsync(new DeadLetterQuery { Endpoint = endpoint }));

        Assert.Equal(TimeSpan.FromMinutes(90), transport.Delays[notDue.Envelope.MessageId]);
        Assert.Null(transport.Delays[pastDue.Envelope.MessageId]);
        Assert.All(transport.Sent, s => Assert.Null(s.Envelope.GetHeader(HeaderNames.DeliverAt)));

        static DeadLetter DueAt(DeadLetter deadLetter, DateTimeOffset dueAt) => deadLetter with
        {
            Envelope = deadLetter.Envelope.WithHeader(HeaderNames.DeliverAt, dueAt.ToString("O", CultureInfo.InvariantCulture)),
        };
    }

    [Fact]
    public async Task Retry_OfADeadLetterOfAPublish_PublishesItToItsTopic_NotToAQueueOfThatName()
    {
        // An event the outbox relay or the stored-event publisher could not publish: the store keeps its topic, and a retry
        // publishes it to the subscribers instead of sending it to a queue named like the topic.
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var deadLetter = NewDeadLetter(endpoint, cause: DeadLetterCause.SendRejected);
        var published = NewDeadLetter(endpoint, cause: DeadLetterCause.SendRejected);
        published = published with { Envelope = published.Envelope.WithHeader(HeaderNames.DeadLetterTopic, endpoint) };
        await AddAllAsync(store, [published, deadLetter]);
        AssertEqual(published, (await store.GetAsync(published.Id))!);

        var clock = new FakeTimeProvider(BaseTime.AddMinutes(30));
        var transport = new RecordingTransport(new Herald.Transport.InMemory.InMemoryTransport(Herald.Transport.InMemory.InMemoryTransportOptions.Default, clock));
        var manager = new DeadLetterManager(store, transport, clock);
        Assert.Equal(new DeadLetterRetryResult(2, 0), await manager.RetryAllAsync(new DeadLetterQuery { Endpoint = endpoint }));

        var retried = Assert.Single(transport.Published);
        Assert.Equal((endpoint, published.Envelope.MessageId), (retried.Topic, retried.Envelope.MessageId));
        Assert.Null(retried.Envelope.GetHeader(HeaderNames.DeadLetterTopic));
        Assert.Contains(transport.Sent, s => s.Destination == endpoint && s.Envelope.MessageId == deadLetter.Envelope.MessageId);
    }

    [Fact]
    public async Task RecordRetryFailure_OfAnUnknownId_ReturnsFalse()
    {
        var store = await CreateStoreAsync();

        Assert.False(await store.RecordRetryFailureAsync(Guid.CreateVersion7(), "nothing there", BaseTime));
    }

    /// <summary>Asserts that two dead letters agree on every field.</summary>
    // Issue 10: dead letters had no retention. The trim uses the port only, so it must work on every store.
    [Fact]
    public async Task Trim_DeletesThoseOlderThanTheMaxAge_ThenTheOldestBeyondTheMaxCount_OfThatEndpointOnly()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var other = UniqueEndpoint();
        var now = BaseTime.AddDays(30);
        var ancient = Enumerable.Range(0, 3).Select(i => NewDeadLetter(endpoint, failedAt: now.AddDays(-10).AddMinutes(i))).ToList();
        var recent = Enumerable.Range(0, 7).Select(i => NewDeadLetter(endpoint, failedAt: now.AddHours(-5).AddMinutes(i))).ToList();
        var untouched = NewDeadLetter(other, failedAt: now.AddDays(-10));
        foreach (var deadLetter in ancient.Concat(recent).Append(untouched))
        {
            await store.AddAsync(deadLetter);
        }

        var manager = new DeadLetterManager(store, new Herald.Transport.InMemory.InMemoryTransport(), new FixedClock(now));
        var trimmed = await manager.TrimAsync(endpoint, maxAge: TimeSpan.FromDays(1), maxCount: 4);

        Assert.Equal(6, trimmed);
        var kept = await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint });
        Assert.Equal(recent.Skip(3).Select(d => d.Id), kept.Select(d => d.Id));
        Assert.NotNull(await store.GetAsync(untouched.Id));
        Assert.Equal(0, await manager.TrimAsync(endpoint, maxAge: TimeSpan.FromDays(1), maxCount: 4));
    }

    [Fact]
    public async Task Trim_ToACountLargerThanTheBatch_DeletesAcrossBatches()
    {
        var store = await CreateStoreAsync();
        var endpoint = UniqueEndpoint();
        var all = Enumerable.Range(0, 250).Select(i => NewDeadLetter(endpoint, failedAt: BaseTime.AddSeconds(i))).ToList();
        foreach (var deadLetter in all)
        {
            await store.AddAsync(deadLetter);
        }

        var manager = new DeadLetterManager(store, new Herald.Transport.InMemory.InMemoryTransport(), new FixedClock(BaseTime.AddDays(1)));
        Assert.Equal(245, await manager.TrimAsync(endpoint, maxAge: null, maxCount: 5));

        Assert.Equal(all.Skip(245).Select(d => d.Id), (await store.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Select(d => d.Id));
    }

    private sealed class FixedClock(DateTimeOffset now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => now;
    }

    protected static void AssertEqual(DeadLetter expected, DeadLetter actual)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(actual);
        Assert.Equal(expected.Id, actual.Id);
        TestEnvelopes.AssertEqual(expected.Envelope, actual.Envelope);
        Assert.Equal(expected.Endpoint, actual.Endpoint);
        Assert.Equal(expected.Cause, actual.Cause);
        Assert.Equal(expected.ErrorType, actual.ErrorType);
        Assert.Equal(expected.ErrorMessage, actual.ErrorMessage);
        Assert.Equal(expected.StackTrace, actual.StackTrace);
        Assert.Equal(expected.Fingerprint, actual.Fingerprint);
        Assert.Equal(expected.FirstFailureTime, actual.FirstFailureTime);
        Assert.Equal(expected.LastFailureTime, actual.LastFailureTime);
        Assert.Equal(expected.AttemptCount, actual.AttemptCount);
        Assert.Equal(expected.RetryCount, actual.RetryCount);
        Assert.Equal(expected.LastRetryError, actual.LastRetryError);
        Assert.Equal(expected.LastRetryTime, actual.LastRetryTime);
    }

    private static async Task AddAllAsync(IDeadLetterStore store, IEnumerable<DeadLetter> deadLetters)
    {
        foreach (var deadLetter in deadLetters)
        {
            await store.AddAsync(deadLetter);
        }
    }

    // Adds the dead letter, records a failed retry of it, and reads it back: its error texts kept as written, or with each
    // character the engine cannot keep (NUL, a lone surrogate) as U+FFFD.
    private static async Task<DeadLetter> AddWithRetryFailureAndAssertErrorsReadableAsync(IDeadLetterStore store, DeadLetter deadLetter, string retryError)
    {
        await store.AddAsync(deadLetter);
        Assert.True(await store.RecordRetryFailureAsync(deadLetter.Id, retryError, BaseTime.AddHours(1)));
        var read = (await store.GetAsync(deadLetter.Id))!;
        Assert.Equal(Readable(deadLetter.ErrorType), Readable(read.ErrorType));
        Assert.Equal(Readable(deadLetter.ErrorMessage), Readable(read.ErrorMessage));
        Assert.Equal(Readable(deadLetter.StackTrace), Readable(read.StackTrace));
        Assert.Equal(Readable(deadLetter.Fingerprint), Readable(read.Fingerprint));
        Assert.Equal(Readable(retryError), Readable(read.LastRetryError));
        return read;
    }

    // A text as an engine that cannot keep NUL or a lone surrogate keeps it (each as U+FFFD), so an assertion holds on every engine.
    private static string? Readable(string? text) =>
        text is null ? null : string.Concat(text.Replace('\0', '\uFFFD').EnumerateRunes().Select(r => r.ToString()));

    private static IEnumerable<Guid> Ids(IEnumerable<DeadLetter> deadLetters) => deadLetters.Select(d => d.Id).Order();
}
