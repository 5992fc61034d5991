using Herald.Conformance.Reliability;
using Herald.EventSourcing;
using Herald.Persistence;
using Herald.Projections;
using Xunit;

namespace Herald.Conformance.Projections;

/// <summary>
/// The contract of <see cref="IReadModelStore"/>. A store's test project derives from it over its real engine. Every test
/// uses a table of its own, so the suite can run against a database other runs share.
/// </summary>
public abstract class ReadModelStoreConformance
{
    /// <summary>Creates the store under test (a fresh one, or one over a shared database).</summary>
    protected abstract ValueTask<IReadModelStore> CreateStoreAsync();

    /// <summary>Begins a unit of work of the store's engine.</summary>
    protected abstract ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IReadModelStore store);

    /// <summary>The event and checkpoint store whose writes share the store's units of work (where a projection keeps its checkpoint).</summary>
    protected abstract ValueTask<(IEventStore Events, ICheckpointStore Checkpoints)> GetEventLogAsync(IReadModelStore store);

    /// <summary>A table name no other test uses.</summary>
    protected static string UniqueTable() => "t" + Guid.NewGuid().ToString("N")[..20];

    /// <summary>Commits one change in a unit of work of its own.</summary>
    protected async Task ChangeAsync(IReadModelStore store, string table, int generation, string id, Func<string?, string?> change)
    {
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.UpdateAsync(table, generation, id, change, unitOfWork);
        await unitOfWork.CommitAsync();
    }

    [Fact]
    public async Task Get_OfADocumentNeverWritten_ReturnsNull_AndANewTableServesGenerationOne()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();

        Assert.Null(await store.GetAsync(table, "missing"));
        Assert.Empty(await store.QueryAsync(table, new ReadModelQuery()));
        Assert.Equal(1, await store.GetActiveGenerationAsync(table));
    }

    [Fact]
    public async Task Lookups_ByAnIdOrValueHoldingU0000_FindNothing_AsForAnyIdNoDocumentHas()
    {
        // No document can have such an id (writes refuse it, StorableReadModelWrites) or such a value: PostgreSQL answered
        // the lookup with a bare 22021 (22P05 for the value), where SQLite and memory found nothing.
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        await ChangeAsync(store, table, 1, "a", _ => """{"name":"x"}""");
        await ChangeAsync(store, table, 1, "b", _ => """{"name":"x"}""");

        Assert.Null(await store.GetAsync(table, "a\0"));
        Assert.Null(await store.GetAsync(table, 1, "a\0"));
        Assert.Empty(await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["name"] = "x\0" } }));
        // As a page's cursor it sorts right after "a".
        Assert.Equal(["b"], (await store.QueryAsync(table, new ReadModelQuery { AfterId = "a\0" })).Select(d => d.Id));
    }

    [Fact]
    public async Task Lookups_ByAnIdOrValueHoldingHalfOfASurrogatePair_FindNothing_NotTheDocumentWithU_FFFDInItsPlace()
    {
        // Regression (round-8 audit of the projections): no document can have such an id (writes refuse it) or such a
        // value. PostgreSQL answered the lookup with a bare encoding error, and SQLite, which binds U+FFFD in its place,
        // found the document that has U+FFFD there.
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        await ChangeAsync(store, table, 1, "a\uFFFD", _ => """{"name":"x\uFFFD"}""");

        Assert.Null(await store.GetAsync(table, "a\uD83D"));
        Assert.Null(await store.GetAsync(table, 1, "a\uDE00"));
        Assert.Empty(await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["name"] = "x\uD83D" } }));
        Assert.NotNull(await store.GetAsync(table, "a\uFFFD"));
        Assert.Single(await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["name"] = "x\uFFFD" } }));

        // A page cannot start after one: refused alike, not an encoding error here and a page after U+FFFD there.
        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await store.QueryAsync(table, new ReadModelQuery { AfterId = "a\uD83D" }));
        Assert.Contains("half of a surrogate pair", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Update_InsertsChangesAndDeletes_OnlyWhenCommitted()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();

        await ChangeAsync(store, table, 1, "a", current => current is null ? """{"n":1}""" : throw new InvalidOperationException("expected no document"));
        Assert.Equal(1, Number(await store.GetAsync(table, "a")));

        await ChangeAsync(store, table, 1, "a", current => $$"""{"n":{{Number(current) + 1}}}""");
        Assert.Equal(2, Number(await store.GetAsync(table, "a")));

        var rolledBack = await BeginUnitOfWorkAsync(store);
        await store.UpdateAsync(table, 1, "a", _ => """{"n":99}""", rolledBack);
        await rolledBack.RollbackAsync();
        Assert.Equal(2, Number(await store.GetAsync(table, "a")));

        await ChangeAsync(store, table, 1, "a", _ => null);
        Assert.Null(await store.GetAsync(table, "a"));
    }

    // IUnitOfWork's contract: once rolled back, a later commit does nothing. On PostgreSQL the changes gathered for the commit
    // outlived the rollback, and the later commit threw writing them into the completed unit of work (so a handler that
    // rolled back its unit of work and returned failed there, and was acked on the other engines).
    [Fact]
    public async Task ACommitAfterARollback_DoesNothing_AndWritesNoneOfTheRolledBackChanges()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.UpdateAsync(table, 1, "a", _ => """{"n":1}""", unitOfWork);

        await unitOfWork.RollbackAsync();
        await unitOfWork.CommitAsync();

        Assert.True(unitOfWork.IsCompleted);
        Assert.Null(await store.GetAsync(table, "a"));
    }

    [Fact]
    public async Task SeveralUpdatesOfOneDocument_InOneUnitOfWork_Compose()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        for (var i = 0; i < 5; i++)
        {
            await store.UpdateAsync(table, 1, "counter", current => $$"""{"n":{{(current is null ? 0 : Number(current)) + 1}}}""", unitOfWork);
        }

        await store.UpdateAsync(table, 1, "other", _ => """{"n":7}""", unitOfWork);
        await unitOfWork.CommitAsync();

        Assert.Equal(5, Number(await store.GetAsync(table, "counter")));
        Assert.Equal(7, Number(await store.GetAsync(table, "other")));
    }

    [Fact]
    public async Task AChangeThatThrows_FailsTheUnitOfWork_AndWritesNothingOfIt()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        var failed = false;
        try
        {
            await store.UpdateAsync(table, 1, "first", _ => """{"n":1}""", unitOfWork);
            await store.UpdateAsync(table, 1, "second", _ => throw new InvalidOperationException("projection bug"), unitOfWork);
            await unitOfWork.CommitAsync();
        }
        catch (InvalidOperationException)
        {
            failed = true;
            await unitOfWork.RollbackAsync();
        }

        Assert.True(failed, "the change's exception must surface from UpdateAsync or CommitAsync");
        Assert.Null(await store.GetAsync(table, "first"));
        Assert.Null(await store.GetAsync(table, "second"));
    }

    [Fact]
    public async Task ADirectUpdate_OfTextThatIsNotJson_IsRefusedNamingTheTableAndId_OnEveryEngine()
    {
        // Regression (audit 42 of the projections): memory stored it (a filtered query of the table then threw a bare
        // JsonException), while SQLite failed the commit with a bare CHECK constraint error and PostgreSQL with a bare 22P02.
        var store = await CreateStoreAsync();
        foreach (var json in new[] { "{\"name\":", "not json", "{\"name\":\"x\"} {}", "", "{\"name\":\"x\",}" })
        {
            var table = UniqueTable();
            var unitOfWork = await BeginUnitOfWorkAsync(store);
            Exception? refused = null;
            try
            {
                await store.UpdateAsync(table, 1, "kept", _ => """{"name":"x"}""", unitOfWork);
                await store.UpdateAsync(table, 1, "doc", _ => json, unitOfWork);
                await unitOfWork.CommitAsync();
            }
            catch (Exception ex)
            {
                refused = ex;
                await unitOfWork.RollbackAsync();
            }

            Assert.True(refused is InvalidOperationException, $"'{json}' is refused with an InvalidOperationException, not {refused?.GetType().Name ?? "stored"}: {refused?.Message}");
            Assert.Contains($"document 'doc' of read model '{table}'", refused!.Message, StringComparison.Ordinal);
            Assert.Contains("not JSON", refused.Message, StringComparison.Ordinal);
            Assert.Null(await store.GetAsync(table, "kept"));
        }

        // JSON as deep as the engines store is taken.
        var deep = UniqueTable();
        await ChangeAsync(store, deep, 1, "deep", _ => string.Concat(Enumerable.Repeat("[", 200)) + string.Concat(Enumerable.Repeat("]", 200)));
        Assert.NotNull(await store.GetAsync(deep, "deep"));
    }

    [Fact]
    public async Task ADirectUpdate_OfWhatNoStoreCanTake_IsRefusedNamingTheTableAndId_AsAProjectionsWriteIs()
    {
        // IReadModelStore.UpdateAsync skipped the checks a projection's writes get: SQLite and memory stored such a
        // document (SQLite an id with U+FFFD in its place) and PostgreSQL failed the commit with a bare 22P02 or 22021.
        var store = await CreateStoreAsync();
        (string Id, string Json, string What)[] refusals =
        [
            ("a\uD83D", "{}", "half of a surrogate pair"),
            ("a\0", "{}", "U+0000"),
            ("doc", """{"name":"x\ud83d"}""", "half of a surrogate pair"),
            ("doc", """{"name":"\ude00x"}""", "half of a surrogate pair"),
            ("doc", "{\"name\":\"x\uD83D\"}", "half of a surrogate pair"),
            ("doc", """{"name":"x\u0000"}""", "U+0000"),
        ];
        foreach (var (id, json, what) in refusals)
        {
            var table = UniqueTable();
            var unitOfWork = await BeginUnitOfWorkAsync(store);
            Exception? refused = null;
            try
            {
                await store.UpdateAsync(table, 1, "kept", _ => """{"name":"\ud83d\ude00 \\ud83d"}""", unitOfWork);
                await store.UpdateAsync(table, 1, id, _ => json, unitOfWork);
                await unitOfWork.CommitAsync();
            }
            catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
            {
                refused = ex;
                await unitOfWork.RollbackAsync();
            }

            Assert.True(refused is not null, $"{json} under an id of {id.Length} characters is refused");
            Assert.Contains(what, refused.Message, StringComparison.Ordinal);
            Assert.Null(await store.GetAsync(table, "kept"));
        }

        // A whole pair, escaped or not, and an escaped backslash before "ud83d" are stored.
        var stored = UniqueTable();
        await ChangeAsync(store, stored, 1, "kept\uD83D\uDE00", _ => """{"name":"\ud83d\ude00 \\ud83d \uD83D\uDE00"}""");
        Assert.NotNull(await store.GetAsync(stored, "kept\uD83D\uDE00"));
    }

    [Fact]
    public async Task Query_FiltersOnStringProperties_InIdOrder_WithKeysetPaging()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        for (var i = 0; i < 12; i++)
        {
            var status = i % 3 == 0 ? "Confirmed" : "Pending";
            var json = $$"""{"id":"o{{i:D2}}","status":"{{status}}","customerId":"c{{i % 2}}","total":{{i}}}""";
            await store.UpdateAsync(table, 1, $"o{i:D2}", _ => json, unitOfWork);
        }

        await unitOfWork.CommitAsync();

        var all = await store.QueryAsync(table, new ReadModelQuery { Limit = 100 });
        Assert.Equal(Enumerable.Range(0, 12).Select(i => $"o{i:D2}"), all.Select(d => d.Id));

        var confirmed = await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["status"] = "Confirmed" } });
        Assert.Equal(["o00", "o03", "o06", "o09"], confirmed.Select(d => d.Id));

        var both = await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["status"] = "Pending", ["customerId"] = "c1" } });
        Assert.Equal(["o01", "o05", "o07", "o11"], both.Select(d => d.Id));

        // A number is not a string: a filter on it matches nothing rather than comparing text forms engine by engine.
        Assert.Empty(await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["total"] = "3" } }));
        Assert.Empty(await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["missing"] = "x" } }));

        var pages = new List<string>();
        string? after = null;
        while (true)
        {
            var page = await store.QueryAsync(table, new ReadModelQuery { Limit = 5, AfterId = after });
            pages.AddRange(page.Select(d => d.Id));
            if (page.Count < 5)
            {
                break;
            }

            after = page[^1].Id;
        }

        Assert.Equal(all.Select(d => d.Id), pages);
        Assert.Contains("\"status\"", all[0].Json, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Query_PagesIdsInCodePointOrder_SoIdsAboveUFFFFComeAfterPrivateUseOnes_OnEveryEngine()
    {
        // UTF-16 ordinal order puts U+1F600 (its surrogates start at D83D) before U+E000; SQLite and PostgreSQL ("C") order
        // by code point, so in-memory paged the same ids in another order than production.
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        string[] ids = ["a", "a\uE000", "a\uFFFD", "a\U0001F600", "b"];
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        foreach (var id in ids.Reverse())
        {
            await store.UpdateAsync(table, 1, id, _ => "{}", unitOfWork);
        }

        await unitOfWork.CommitAsync();

        Assert.Equal(ids, (await store.QueryAsync(table, new ReadModelQuery { Limit = 100 })).Select(d => d.Id));
        Assert.Equal(ids[3..], (await store.QueryAsync(table, new ReadModelQuery { Limit = 100, AfterId = ids[2] })).Select(d => d.Id));
        Assert.Equal(ids[2..], (await store.QueryAsync(table, new ReadModelQuery { Limit = 100, AfterId = ids[1] })).Select(d => d.Id));
    }

    [Fact]
    public async Task Query_WithAHostilePropertyOrValue_IsRefusedOrMatchedLiterally()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        await ChangeAsync(store, table, 1, "a", _ => """{"name":"x' OR '1'='1"}""");

        await Assert.ThrowsAsync<ArgumentException>(async () =>
            await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["name') OR 1=1 --"] = "x" } }));
        Assert.Empty(await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["name"] = "x" } }));
        Assert.Single(await store.QueryAsync(table, new ReadModelQuery { Where = new Dictionary<string, string> { ["name"] = "x' OR '1'='1" } }));
        await Assert.ThrowsAsync<ArgumentException>(async () => await store.GetAsync("Bad-Name; DROP", "a"));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.QueryAsync(table, new ReadModelQuery { Limit = 0 }));
    }

    [Fact]
    public async Task ANewGeneration_IsFilledApart_ThenServesReads_OnceActivated()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        await ChangeAsync(store, table, 1, "a", _ => """{"v":"old"}""");

        await store.ResetGenerationAsync(table, 2);
        await ChangeAsync(store, table, 2, "a", _ => """{"v":"new"}""");
        await ChangeAsync(store, table, 2, "b", _ => """{"v":"new"}""");

        // The rebuild fills generation 2 while reads keep seeing generation 1.
        Assert.Contains("old", await store.GetAsync(table, "a"), StringComparison.Ordinal);
        Assert.Single(await store.QueryAsync(table, new ReadModelQuery()));

        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.ActivateGenerationAsync(table, 2, unitOfWork);
        await unitOfWork.CommitAsync();

        Assert.Equal(2, await store.GetActiveGenerationAsync(table));
        Assert.Contains("new", await store.GetAsync(table, "a"), StringComparison.Ordinal);
        Assert.Equal(2, (await store.QueryAsync(table, new ReadModelQuery())).Count);

        await store.DropGenerationAsync(table, 1);
        await store.DropGenerationAsync(table, 1);
        Assert.Equal(2, (await store.QueryAsync(table, new ReadModelQuery())).Count);
    }

    [Fact]
    public async Task GetOfAGeneration_ReadsItsCommittedDocuments_WhicheverServes_AndNullWhereItHasNoStorage()
    {
        // What a projection being rebuilt reads of its own tables: the generation it fills, not the one that serves.
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        Assert.Null(await store.GetAsync(table, 1, "a"));
        await ChangeAsync(store, table, 1, "a", _ => """{"v":"old"}""");
        await store.ResetGenerationAsync(table, 2);
        Assert.Null(await store.GetAsync(table, 2, "a"));

        await ChangeAsync(store, table, 2, "a", _ => """{"v":"new"}""");
        var uncommitted = await BeginUnitOfWorkAsync(store);
        await store.UpdateAsync(table, 2, "b", _ => """{"v":"uncommitted"}""", uncommitted);

        Assert.Contains("old", await store.GetAsync(table, 1, "a"), StringComparison.Ordinal);
        Assert.Contains("new", await store.GetAsync(table, 2, "a"), StringComparison.Ordinal);
        Assert.Null(await store.GetAsync(table, 2, "b"));
        Assert.Null(await store.GetAsync(table, 3, "a"));
        await uncommitted.RollbackAsync();

        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.ActivateGenerationAsync(table, 2, unitOfWork);
        await unitOfWork.CommitAsync();
        await store.DropGenerationAsync(table, 1);
        Assert.Null(await store.GetAsync(table, 1, "a"));
        Assert.Contains("new", await store.GetAsync(table, 2, "a"), StringComparison.Ordinal);
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.GetAsync(table, 0, "a"));
    }

    [Fact]
    public async Task Reset_EmptiesWhatAFailedRebuildLeft_AndNeverTouchesTheActiveGeneration()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        await ChangeAsync(store, table, 1, "live", _ => """{"v":1}""");
        await ChangeAsync(store, table, 2, "leftover", _ => """{"v":1}""");

        await store.ResetGenerationAsync(table, 2);
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.ActivateGenerationAsync(table, 2, unitOfWork);
        await unitOfWork.CommitAsync();

        Assert.Null(await store.GetAsync(table, "leftover"));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await store.ResetGenerationAsync(table, 2));
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await store.DropGenerationAsync(table, 2));
    }

    [Fact]
    public async Task AWriteOfARetiredGeneration_FailsItsUnitOfWork_AndWritesNothing()
    {
        // Regression (audit of 22ee879): a runner that a rebuild left on the old generation wrote it, making its dropped
        // table again, with the checkpoint of that generation.
        var store = await CreateStoreAsync();
        var (_, checkpoints) = await GetEventLogAsync(store);
        var table = UniqueTable();
        var projection = "retired-" + table;
        await ChangeAsync(store, table, 1, "a", _ => """{"n":1}""");
        await store.ResetGenerationAsync(table, 2);
        await ChangeAsync(store, table, 2, "a", _ => """{"n":2}""");
        var switching = await BeginUnitOfWorkAsync(store);
        await store.ActivateGenerationAsync(table, 2, switching);
        await switching.CommitAsync();
        await store.DropGenerationAsync(table, 1);

        // Refused at once or at the commit (engines differ), with the checkpoint written in the same unit.
        var stale = await BeginUnitOfWorkAsync(store);
        await checkpoints.SetCheckpointAsync(projection, 10, stale);
        var refused = await Assert.ThrowsAsync<ReadModelGenerationRetiredException>(async () =>
        {
            await store.UpdateAsync(table, 1, "b", _ => """{"n":3}""", stale);
            await stale.CommitAsync();
        });
        await stale.RollbackAsync();

        Assert.Equal((table, 1, 2), (refused.Table, refused.Generation, refused.ActiveGeneration));
        Assert.Null(await checkpoints.GetCheckpointAsync(projection));
        Assert.Equal(2, Number(await store.GetAsync(table, "a")));
        Assert.Null(await store.GetAsync(table, "b"));

        // A generation past the active one (the next rebuild's) is written as ever.
        await ChangeAsync(store, table, 3, "c", _ => """{"n":4}""");
    }

    [Fact]
    public async Task AnActivationRolledBack_LeavesReadsOnTheOldGeneration()
    {
        var store = await CreateStoreAsync();
        var table = UniqueTable();
        await ChangeAsync(store, table, 1, "a", _ => """{"v":"old"}""");
        await store.ResetGenerationAsync(table, 2);

        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.ActivateGenerationAsync(table, 2, unitOfWork);
        await unitOfWork.RollbackAsync();

        Assert.Equal(1, await store.GetActiveGenerationAsync(table));
        Assert.Contains("old", await store.GetAsync(table, "a"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AChangeAndTheProjectionCheckpoint_CommitTogether_OrNeitherIsVisible()
    {
        var store = await CreateStoreAsync();
        var (events, checkpoints) = await GetEventLogAsync(store);
        var table = UniqueTable();
        var projection = "projection-" + table;

        var committed = await BeginUnitOfWorkAsync(store);
        await store.UpdateAsync(table, 1, "a", _ => """{"n":1}""", committed);
        await checkpoints.SetCheckpointAsync(projection, 10, committed);
        await committed.CommitAsync();

        var rolledBack = await BeginUnitOfWorkAsync(store);
        await store.UpdateAsync(table, 1, "a", _ => """{"n":2}""", rolledBack);
        await checkpoints.SetCheckpointAsync(projection, 20, rolledBack);
        await rolledBack.RollbackAsync();

        // A conflict elsewhere in the unit (a stale append) takes the change and the checkpoint down with it.
        var conflicted = await BeginUnitOfWorkAsync(store);
        await store.UpdateAsync(table, 1, "a", _ => """{"n":3}""", conflicted);
        await checkpoints.SetCheckpointAsync(projection, 30, conflicted);
        await events.AppendAsync("order-" + table, ExpectedVersion.Exactly(5), [TestEnvelopes.Create()], conflicted);
        await Assert.ThrowsAsync<ConcurrencyException>(async () => await conflicted.CommitAsync());

        // A change that throws (at once, or at the commit: engines differ) takes the checkpoint down with it.
        var failed = await BeginUnitOfWorkAsync(store);
        await checkpoints.SetCheckpointAsync(projection, 40, failed);
        await Assert.ThrowsAsync<InvalidOperationException>(async () =>
        {
            await store.UpdateAsync(table, 1, "a", _ => throw new InvalidOperationException("projection bug"), failed);
            await failed.CommitAsync();
        });
        await failed.RollbackAsync();

        Assert.Equal(1, Number(await store.GetAsync(table, "a")));
        Assert.Equal(10, await checkpoints.GetCheckpointAsync(projection));
    }

    /// <summary>The number in a document of the shape <c>{"n":5}</c>.</summary>
    protected static int Number(string? json)
    {
        Assert.NotNull(json);
        using var document = System.Text.Json.JsonDocument.Parse(json);
        return document.RootElement.GetProperty("n").GetInt32();
    }
}
