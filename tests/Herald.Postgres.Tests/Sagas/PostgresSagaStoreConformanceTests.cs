using Herald.Conformance.Sagas;
using Herald.Persistence;
using Herald.Postgres.Sagas;
using Herald.Postgres.Tests.Reliability;
using Herald.Sagas;

namespace Herald.Postgres.Tests.Sagas;

/// <summary>The saga store contract on a PostgreSQL schema shared by the class's tests (each uses a saga name of its own).</summary>
public sealed class PostgresSagaStoreConformanceTests(ReliabilitySchema schema) : SagaStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<ISagaStore> CreateStoreAsync(TimeProvider timeProvider) => ValueTask.FromResult<ISagaStore>(new PostgresSagaStore(schema.Store, timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(ISagaStore store) => ValueTask.FromResult<IUnitOfWork>(schema.Store.BeginUnitOfWork());

    [Fact]
    public async Task Save_OfAKeyHoldingU0000_IsRefusedNamingIt()
    {
        // PostgreSQL's text cannot hold it: the save failed with a bare 22021.
        var store = new PostgresSagaStore(schema.Store);

        var id = await Assert.ThrowsAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(UniqueSaga(), "order-1\0")));
        var name = await Assert.ThrowsAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(UniqueSaga() + "\0"), schema.Store.BeginUnitOfWork()));

        Assert.Contains("saga instance id 'order-1\\u0000' holds the character U+0000", id.Message, StringComparison.Ordinal);
        Assert.Contains("saga name", name.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Save_OfAStepOrTimeoutHoldingU0000_IsRefusedNamingIt()
    {
        // PostgreSQL's text and jsonb cannot hold it: the save failed with a bare 22021 (22P05 for a timeout). These drive
        // the saga on, so they are refused rather than altered.
        var store = new PostgresSagaStore(schema.Store);
        var timeout = new SagaTimeout("payment\0", Guid.NewGuid(), DateTimeOffset.UnixEpoch, "payment-timed-out", "{}"u8.ToArray());
        var stateless = NewInstance(UniqueSaga(), "order-1");

        var state = await Assert.ThrowsAsync<ArgumentException>(async () => await store.SaveAsync(stateless with { State = "Charging\0" }));
        var step = await Assert.ThrowsAsync<ArgumentException>(async () => await store.SaveAsync(stateless with { CompletedSteps = ["reserve\0"] }));
        var timedOut = await Assert.ThrowsAsync<ArgumentException>(async () => await store.SaveAsync(stateless with { Timeouts = [timeout] }));

        Assert.Contains($"saga state 'Charging\\u0000' of saga '{stateless.SagaType}' instance 'order-1'", state.Message, StringComparison.Ordinal);
        Assert.Contains("completed step 'reserve\\u0000'", step.Message, StringComparison.Ordinal);
        Assert.Contains("timeout name 'payment\\u0000'", timedOut.Message, StringComparison.Ordinal);
        Assert.Null(await store.LoadAsync(stateless.SagaType, stateless.Id));
    }

    [Fact]
    public async Task Save_OfAnErrorHoldingU0000_StoresItReadable()
    {
        // The error is an exception's message, which can echo its input; the save failed with a bare 22021, so a failed
        // saga could not record its failure. As a dead letter's error, it is stored with U+FFFD in place of U+0000.
        var store = new PostgresSagaStore(schema.Store);
        var instance = NewInstance(UniqueSaga(), status: SagaStatus.Failed) with { Error = "FormatException: bad input 'a\0b'" };

        await store.SaveAsync(instance);

        Assert.Equal("FormatException: bad input 'a\uFFFDb'", (await store.LoadAsync(instance.SagaType, instance.Id))!.Error);
    }
}
