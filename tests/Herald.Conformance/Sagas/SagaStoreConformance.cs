using System.Text;
using Herald.Conformance.Reliability;
using Herald.Persistence;
using Herald.Sagas;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Sagas;

/// <summary>
/// The contract of <see cref="ISagaStore"/>. A store's test project derives from it over its real engine. Every test
/// uses a saga name of its own, so the suite can run against a database other runs share.
/// </summary>
public abstract class SagaStoreConformance
{
    /// <summary>Creates the store under test (a fresh one, or one over a shared database), stamping saves with <paramref name="timeProvider"/>.</summary>
    protected abstract ValueTask<ISagaStore> CreateStoreAsync(TimeProvider timeProvider);

    /// <summary>Creates the store under test on the system clock.</summary>
    protected ValueTask<ISagaStore> CreateStoreAsync() => CreateStoreAsync(TimeProvider.System);

    /// <summary>Begins a unit of work of the store's engine.</summary>
    protected abstract ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(ISagaStore store);

    /// <summary>A saga name no other test uses.</summary>
    protected static string UniqueSaga() => "saga-" + Guid.NewGuid().ToString("N");

    /// <summary>A new instance (version 0) with every field set.</summary>
    protected static SagaInstance NewInstance(string sagaType, string? id = null, SagaStatus status = SagaStatus.Running) => new()
    {
        SagaType = sagaType,
        Id = id ?? Guid.NewGuid().ToString(),
        Status = status,
        State = "ChargingPayment",
        CurrentStep = 1,
        CompletedSteps = ["reserve-inventory"],
        Data = Encoding.UTF8.GetBytes("""{"orderId":"o-1","amount":42.5,"note":"ünïcode"}"""),
        Error = null,
    };

    [Fact]
    public async Task Save_ThenLoad_ReturnsEveryFieldAtVersionOne()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga()) with { Error = "PaymentDeclined: card expired" };

        var version = await store.SaveAsync(instance);
        var loaded = await store.LoadAsync(instance.SagaType, instance.Id);

        Assert.Equal(1, version);
        Assert.NotNull(loaded);
        Assert.Equal(1, loaded.Version);
        Assert.Equal(instance.Status, loaded.Status);
        Assert.Equal(instance.State, loaded.State);
        Assert.Equal(instance.CurrentStep, loaded.CurrentStep);
        Assert.Equal(instance.CompletedSteps, loaded.CompletedSteps);
        Assert.Equal(instance.Data.ToArray(), loaded.Data.ToArray());
        Assert.Equal(instance.Error, loaded.Error);
        Assert.NotEqual(default, loaded.CreatedAt);
        Assert.Equal(loaded.CreatedAt, loaded.UpdatedAt);
    }

    [Fact]
    public async Task Timeouts_AreKept_WithTheInstance_AndReplacedByASave()
    {
        var store = await CreateStoreAsync();
        var due = new DateTimeOffset(2031, 5, 6, 7, 8, 9, TimeSpan.FromHours(2));
        var payment = new SagaTimeout("payment", Guid.NewGuid(), due, "payment-timed-out", Encoding.UTF8.GetBytes("{\"orderId\":\"o-1\"}"));
        var shipping = new SagaTimeout("shipping", Guid.NewGuid(), due.AddDays(1), "shipping-late", new byte[] { 0, 255, 7 }) { ResentAt = due.AddHours(3) };
        var instance = NewInstance(UniqueSaga()) with { Timeouts = [payment, shipping] };

        var version = await store.SaveAsync(instance);
        var loaded = await store.LoadAsync(instance.SagaType, instance.Id);

        Assert.NotNull(loaded);
        Assert.Equal(2, loaded.Timeouts.Count);
        AssertSame(payment, loaded.Timeouts[0]);
        AssertSame(shipping, loaded.Timeouts[1]);

        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.SaveAsync(loaded with { Timeouts = [shipping] }, unitOfWork);
        await unitOfWork.CommitAsync();
        var afterUnit = await store.LoadAsync(instance.SagaType, instance.Id);
        AssertSame(shipping, Assert.Single(afterUnit!.Timeouts));

        await store.SaveAsync(afterUnit with { Timeouts = [] });
        Assert.Empty((await store.LoadAsync(instance.SagaType, instance.Id))!.Timeouts);
        Assert.Equal(1, version);

        static void AssertSame(SagaTimeout expected, SagaTimeout actual)
        {
            Assert.Equal(expected.Name, actual.Name);
            Assert.Equal(expected.Id, actual.Id);
            Assert.Equal(expected.DueAt, actual.DueAt);
            Assert.Equal(expected.MessageType, actual.MessageType);
            Assert.Equal(expected.Body.ToArray(), actual.Body.ToArray());
            Assert.Equal(expected.ResentAt, actual.ResentAt);
        }
    }

    [Fact]
    public async Task Load_OfAnInstanceNeverSaved_ReturnsNull()
    {
        var store = await CreateStoreAsync();

        Assert.Null(await store.LoadAsync(UniqueSaga(), "missing"));
    }

    [Fact]
    public async Task Lookups_ByAKeyHoldingU0000_FindNothing_AndAsACursorItSortsWhereItWould()
    {
        // PostgreSQL's text cannot hold U+0000, so no instance has such a key: it answered these with a bare 22021.
        var store = await CreateStoreAsync();
        var saga = UniqueSaga();
        await store.SaveAsync(NewInstance(saga, "a"));
        await store.SaveAsync(NewInstance(saga, "b"));

        Assert.Null(await store.LoadAsync(saga, "a\0"));
        Assert.Null(await store.LoadAsync(saga + "\0", "a"));
        Assert.False(await store.DeleteAsync(saga, "a\0", version: 1));
        Assert.Empty(await store.ListAsync(new SagaQuery { SagaType = saga + "\0" }));
        Assert.Equal(["b"], (await store.ListAsync(new SagaQuery { SagaType = saga, After = (saga, "a\0") })).Select(i => i.Id));
        Assert.Empty(await store.ListAsync(new SagaQuery { SagaType = saga, After = (saga + "\0", "") }));
        Assert.NotNull(await store.LoadAsync(saga, "a"));
    }

    [Fact]
    public async Task Save_OfAKeyHoldingHalfASurrogatePair_IsRefused_AndLookupsOfItFindNothing()
    {
        // An id cut inside an emoji: SQLite stored it as U+FFFD, so "order-\uD83D" was the instance "order-\uFFFD" (and so
        // was every id cut the same way); PostgreSQL's client failed to encode it. No store keeps it, so none finds it.
        var store = await CreateStoreAsync();
        var saga = UniqueSaga();
        await store.SaveAsync(NewInstance(saga, "order-\uFFFD"));
        var cut = NewInstance(saga, "order-\uD83D");

        var direct = await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.SaveAsync(cut));
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(saga + "\uDC00", "order-1"), unitOfWork));
        await unitOfWork.RollbackAsync();

        Assert.Contains("half of a surrogate pair", direct.Message, StringComparison.Ordinal);
        Assert.Null(await store.LoadAsync(saga, cut.Id));
        Assert.Null(await store.LoadAsync(saga + "\uDC00", "order-1"));
        Assert.False(await store.DeleteAsync(saga, cut.Id, version: 1));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.ListAsync(new SagaQuery { SagaType = saga + "\uDC00" }));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.ListAsync(new SagaQuery { SagaType = saga, After = (saga, cut.Id) }));
        Assert.Equal(["order-\uFFFD"], (await store.ListAsync(new SagaQuery { SagaType = saga })).Select(i => i.Id));
        Assert.Equal(1, (await store.LoadAsync(saga, "order-\uFFFD"))!.Version);
    }

    [Fact]
    public async Task Save_OfTheLoadedVersion_MovesTheVersionOnAndKeepsTheCreationTime()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        await store.SaveAsync(instance);
        var loaded = (await store.LoadAsync(instance.SagaType, instance.Id))!;

        var version = await store.SaveAsync(loaded with { Status = SagaStatus.Completed, State = null, CurrentStep = 4, CompletedSteps = ["a", "b", "c", "d"] });
        var reloaded = (await store.LoadAsync(instance.SagaType, instance.Id))!;

        Assert.Equal(2, version);
        Assert.Equal(2, reloaded.Version);
        Assert.Equal(SagaStatus.Completed, reloaded.Status);
        Assert.Null(reloaded.State);
        Assert.Equal(["a", "b", "c", "d"], reloaded.CompletedSteps);
        Assert.Equal(loaded.CreatedAt, reloaded.CreatedAt);
        Assert.True(reloaded.UpdatedAt >= loaded.UpdatedAt);
    }

    // Regression (stop 41): PostgreSQL kept an instance's CreatedAt and UpdatedAt in UTC to the microsecond, SQLite kept
    // every tick of the store's clock and the in-memory store its offset too: an instance read back differed per engine.
    // Every engine now keeps them as PostgreSQL does, saved alone or in a unit of work, created or updated.
    [Fact]
    public async Task Save_AloneAndInAUnitOfWork_KeepsCreatedAtAndUpdatedAtInUtcToTheMicrosecond_OnEveryEngine()
    {
        var clock = new FakeTimeProvider(TestEnvelopes.OffsetTimeWithTicks);
        var store = await CreateStoreAsync(clock);
        var alone = NewInstance(UniqueSaga());
        var inUnit = NewInstance(alone.SagaType);
        var created = clock.GetUtcNow();

        await store.SaveAsync(alone);
        await SaveInAUnitOfWorkAsync(inUnit);
        var loaded = await LoadBothAsync();
        Assert.All(loaded, instance => TestEnvelopes.AssertKeptInUtcToTheMicrosecond(created, instance.CreatedAt));
        Assert.All(loaded, instance => TestEnvelopes.AssertKeptInUtcToTheMicrosecond(created, instance.UpdatedAt));

        clock.Advance(TimeSpan.FromTicks(12_345_678));
        var updated = clock.GetUtcNow();
        await store.SaveAsync(loaded[0]);
        await SaveInAUnitOfWorkAsync(loaded[1]);

        var listed = await store.ListAsync(new SagaQuery { SagaType = alone.SagaType });
        Assert.Equal(2, listed.Count);
        Assert.All(listed, instance => TestEnvelopes.AssertKeptInUtcToTheMicrosecond(created, instance.CreatedAt));
        Assert.All(listed, instance => TestEnvelopes.AssertKeptInUtcToTheMicrosecond(updated, instance.UpdatedAt));
        Assert.Equal(TimeSpan.FromHours(2), updated.Offset);

        async Task SaveInAUnitOfWorkAsync(SagaInstance instance)
        {
            var unitOfWork = await BeginUnitOfWorkAsync(store);
            await store.SaveAsync(instance, unitOfWork);
            await unitOfWork.CommitAsync();
        }

        async Task<SagaInstance[]> LoadBothAsync() =>
            [(await store.LoadAsync(alone.SagaType, alone.Id))!, (await store.LoadAsync(inUnit.SagaType, inUnit.Id))!];
    }

    [Fact]
    public async Task Save_OfAStaleVersion_ThrowsAndWritesNothing()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        await store.SaveAsync(instance);
        var loaded = (await store.LoadAsync(instance.SagaType, instance.Id))!;
        await store.SaveAsync(loaded with { CurrentStep = 2 });

        var conflict = await Assert.ThrowsAsync<SagaConcurrencyException>(async () => await store.SaveAsync(loaded with { CurrentStep = 3 }));

        Assert.Equal(1, conflict.ExpectedVersion);
        Assert.Equal(2, conflict.ActualVersion);
        var stored = (await store.LoadAsync(instance.SagaType, instance.Id))!;
        Assert.Equal(2, stored.CurrentStep);
        Assert.Equal(2, stored.Version);
    }

    [Fact]
    public async Task Save_OfANewInstanceWhoseIdExists_Throws()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        await store.SaveAsync(instance);

        var conflict = await Assert.ThrowsAsync<SagaConcurrencyException>(async () => await store.SaveAsync(instance with { CurrentStep = 9 }));

        Assert.Equal(0, conflict.ExpectedVersion);
        Assert.Equal(1, (await store.LoadAsync(instance.SagaType, instance.Id))!.CurrentStep);
    }

    [Fact]
    public async Task Save_OfAVersionThatWasNeverStored_Throws()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga()) with { Version = 3 };

        var conflict = await Assert.ThrowsAsync<SagaConcurrencyException>(async () => await store.SaveAsync(instance));

        Assert.Null(conflict.ActualVersion);
        Assert.Null(await store.LoadAsync(instance.SagaType, instance.Id));
    }

    [Fact]
    public async Task ConcurrentSaves_OfOneLoadedVersion_ExactlyOneWins()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        await store.SaveAsync(instance);
        var loaded = (await store.LoadAsync(instance.SagaType, instance.Id))!;

        var saves = Enumerable.Range(0, 8).Select(i => Task.Run(async () =>
        {
            try
            {
                await store.SaveAsync(loaded with { CurrentStep = 10 + i });
                return i;
            }
            catch (SagaConcurrencyException)
            {
                return -1;
            }
        })).ToList();
        var results = await Task.WhenAll(saves);

        var winners = results.Where(r => r >= 0).ToList();
        Assert.Single(winners);
        var stored = (await store.LoadAsync(instance.SagaType, instance.Id))!;
        Assert.Equal(2, stored.Version);
        Assert.Equal(10 + winners[0], stored.CurrentStep);
    }

    [Fact]
    public async Task SaveInAUnitOfWork_IsInvisibleUntilTheCommit()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        await store.SaveAsync(instance, unitOfWork);
        Assert.Null(await store.LoadAsync(instance.SagaType, instance.Id));
        await unitOfWork.CommitAsync();

        Assert.Equal(1, (await store.LoadAsync(instance.SagaType, instance.Id))!.Version);
    }

    [Fact]
    public async Task SaveInAUnitOfWork_RolledBack_WritesNothing()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        await store.SaveAsync(instance, unitOfWork);
        await unitOfWork.RollbackAsync();

        Assert.Null(await store.LoadAsync(instance.SagaType, instance.Id));
    }

    [Fact]
    public async Task ConflictInAUnitOfWork_SurfacesAtCommit_AndWritesNothingOfTheUnit()
    {
        var store = await CreateStoreAsync();
        var saga = UniqueSaga();
        var contested = NewInstance(saga, "contested");
        await store.SaveAsync(contested);
        var loaded = (await store.LoadAsync(saga, "contested"))!;
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        // Another writer saves first; an engine that writes early must not block on it nor fail before the commit.
        await store.SaveAsync(loaded with { CurrentStep = 7 });
        await store.SaveAsync(NewInstance(saga, "bystander"), unitOfWork);
        await store.SaveAsync(loaded with { CurrentStep = 5 }, unitOfWork);

        await Assert.ThrowsAsync<SagaConcurrencyException>(async () => await unitOfWork.CommitAsync());
        Assert.Null(await store.LoadAsync(saga, "bystander"));
        Assert.Equal(7, (await store.LoadAsync(saga, "contested"))!.CurrentStep);
    }

    [Fact]
    public async Task TwoSavesOfOneInstanceInAUnitOfWork_ChainTheirVersions()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        await store.SaveAsync(instance, unitOfWork);
        await store.SaveAsync(instance with { Version = 1, CurrentStep = 2 }, unitOfWork);
        await unitOfWork.CommitAsync();

        var stored = (await store.LoadAsync(instance.SagaType, instance.Id))!;
        Assert.Equal(2, stored.Version);
        Assert.Equal(2, stored.CurrentStep);
    }

    [Fact]
    public async Task List_FiltersBySagaAndStatus_InIdOrder_AndPages()
    {
        var store = await CreateStoreAsync();
        var saga = UniqueSaga();
        var other = UniqueSaga();
        foreach (var (id, status) in new[] { ("c", SagaStatus.Running), ("a", SagaStatus.Compensating), ("b", SagaStatus.Completed), ("d", SagaStatus.Failed), ("e", SagaStatus.Running) })
        {
            await store.SaveAsync(NewInstance(saga, id, status));
        }

        await store.SaveAsync(NewInstance(other, "a"));

        var unfinished = await store.ListAsync(SagaQuery.Unfinished() with { SagaType = saga });
        var firstPage = await store.ListAsync(new SagaQuery { SagaType = saga, Limit = 2 });
        var secondPage = await store.ListAsync(new SagaQuery { SagaType = saga, Limit = 2, After = (saga, firstPage[^1].Id) });
        var failed = await store.ListAsync(new SagaQuery { SagaType = saga, Statuses = [SagaStatus.Failed] });

        Assert.Equal(["a", "c", "e"], unfinished.Select(i => i.Id));
        Assert.Equal(["a", "b"], firstPage.Select(i => i.Id));
        Assert.Equal(["c", "d"], secondPage.Select(i => i.Id));
        Assert.Equal(["d"], failed.Select(i => i.Id));
        Assert.All(unfinished, i => Assert.Equal(saga, i.SagaType));
    }

    [Fact]
    public async Task List_OrdersAndPagesIdsByCodePoint_AsEveryEngineKeepsThem()
    {
        // SQLite (UTF-8 bytes) and PostgreSQL (COLLATE "C") order keys by code point. The in-memory store ordered UTF-16
        // code units, which put an id holding a character past U+FFFF before one holding U+E000 to U+FFFF, so a page and a
        // cursor there did not match the engines.
        var store = await CreateStoreAsync();
        var saga = UniqueSaga();
        foreach (var id in new[] { "a\U0001F600", "a\uFFFD", "a\uE000", "a~" })
        {
            await store.SaveAsync(NewInstance(saga, id));
        }

        var all = await store.ListAsync(new SagaQuery { SagaType = saga });
        var afterFffd = await store.ListAsync(new SagaQuery { SagaType = saga, After = (saga, "a\uFFFD") });
        var firstPage = await store.ListAsync(new SagaQuery { SagaType = saga, Limit = 2 });
        var secondPage = await store.ListAsync(new SagaQuery { SagaType = saga, Limit = 2, After = (saga, firstPage[^1].Id) });

        Assert.Equal(["a~", "a\uE000", "a\uFFFD", "a\U0001F600"], all.Select(i => i.Id));
        Assert.Equal(["a\U0001F600"], afterFffd.Select(i => i.Id));
        Assert.Equal(["a~", "a\uE000", "a\uFFFD", "a\U0001F600"], firstPage.Concat(secondPage).Select(i => i.Id));
    }

    [Fact]
    public async Task Delete_OfTheStoredVersion_RemovesIt_AndOfAnotherVersion_DoesNot()
    {
        var store = await CreateStoreAsync();
        var instance = NewInstance(UniqueSaga());
        await store.SaveAsync(instance);

        Assert.False(await store.DeleteAsync(instance.SagaType, instance.Id, version: 2));
        Assert.NotNull(await store.LoadAsync(instance.SagaType, instance.Id));
        Assert.True(await store.DeleteAsync(instance.SagaType, instance.Id, version: 1));
        Assert.Null(await store.LoadAsync(instance.SagaType, instance.Id));
        Assert.False(await store.DeleteAsync(instance.SagaType, instance.Id, version: 1));
    }

    [Fact]
    public async Task Save_OfAnInvalidInstance_IsRefusedBeforeAnythingIsWritten()
    {
        var store = await CreateStoreAsync();
        var saga = UniqueSaga();

        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(saga, id: " ")));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(saga, id: new string('x', 201))));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(saga) with { Version = -1 }));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(saga) with { Status = (SagaStatus)42 }));
        await Assert.ThrowsAnyAsync<ArgumentException>(async () => await store.ListAsync(new SagaQuery { Limit = 0 }));
        Assert.Empty(await store.ListAsync(new SagaQuery { SagaType = saga }));
    }
}
