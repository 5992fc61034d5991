using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Messages;
using Herald.Persistence;
using Herald.Projections;

namespace Herald.Tests.Persistence;

/// <summary>The in-memory unit of work where the order its stores were made in matters (their lock order).</summary>
public sealed class InMemoryUnitOfWorkTests
{
    // The event store, made first, applies first: a read-model change that threw as the read-model store applied left the
    // append written and the change not, a half commit no database engine makes (they roll the whole transaction back).
    [Fact]
    public async Task AReadModelChangeThatThrowsAtTheCommit_AfterAnEarlierStoresWrites_LeavesThemUnwritten()
    {
        var events = new InMemoryEventStore();
        var readModels = new InMemoryReadModelStore();
        var unitOfWork = new InMemoryUnitOfWork();
        await events.AppendAsync("order-1", ExpectedVersion.NoStream, [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = "{}"u8.ToArray() }], unitOfWork);
        await readModels.UpdateAsync("orders", 1, "1", current => current is null ? """{"by":"first"}""" : throw new InvalidOperationException("the document exists already"), unitOfWork);

        // Another unit of work makes the document before this one commits.
        var other = new InMemoryUnitOfWork();
        await readModels.UpdateAsync("orders", 1, "1", _ => """{"by":"other"}""", other);
        await other.CommitAsync();

        var thrown = await Assert.ThrowsAsync<InvalidOperationException>(() => unitOfWork.CommitAsync().AsTask());

        Assert.Equal("the document exists already", thrown.Message);
        Assert.Equal(0, await events.GetStreamVersionAsync("order-1"));
        Assert.Equal("""{"by":"other"}""", await readModels.GetAsync("orders", "1"));
    }
}
