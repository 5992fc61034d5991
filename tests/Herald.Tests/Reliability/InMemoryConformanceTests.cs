using Herald.Persistence;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Conformance.Reliability;

namespace Herald.Tests.Reliability;

public sealed class InMemoryDeadLetterStoreConformanceTests : DeadLetterStoreConformance
{
    protected override ValueTask<IDeadLetterStore> CreateStoreAsync() => ValueTask.FromResult<IDeadLetterStore>(new InMemoryDeadLetterStore());
}

public sealed class InMemoryOutboxStoreConformanceTests : OutboxStoreConformance
{
    protected override ValueTask<IOutboxStore> CreateStoreAsync() => ValueTask.FromResult<IOutboxStore>(new InMemoryOutboxStore());

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IOutboxStore store) => ValueTask.FromResult<IUnitOfWork>(new InMemoryUnitOfWork());
}

public sealed class InMemoryInboxConformanceTests : InboxConformance
{
    protected override ValueTask<IInbox> CreateInboxAsync(TimeProvider timeProvider) => ValueTask.FromResult<IInbox>(new InMemoryInbox(timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IInbox inbox) => ValueTask.FromResult<IUnitOfWork>(new InMemoryUnitOfWork());
}

public sealed class InMemoryIdempotencyStoreConformanceTests : IdempotencyStoreConformance
{
    protected override ValueTask<IIdempotencyStore> CreateStoreAsync(TimeProvider timeProvider) =>
        ValueTask.FromResult<IIdempotencyStore>(new InMemoryIdempotencyStore(timeProvider));
}
