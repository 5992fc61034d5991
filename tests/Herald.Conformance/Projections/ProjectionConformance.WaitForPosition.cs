using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Persistence;
using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace Herald.Conformance.Projections;

/// <summary>
/// Read-your-writes: <see cref="ProjectionManager.WaitForPositionAsync"/> completes once the projection applied the events up
/// to a position, on whichever node it is asked (a web node that handled the command need not run the projection), and at
/// once for an inline projection, whose writes commit with the events.
/// </summary>
public abstract partial class ProjectionConformance
{
    [Fact]
    public async Task WaitingForAPosition_OnANodeThatDoesNotRunTheProjection_CompletesOnceItsLeaderAppliedTheEvents()
    {
        var store = NewStore();
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Func<TallyAdded, ProjectionContext, Task> gate = async (e, _) =>
        {
            if (e.Key == "late")
            {
                held.TrySetResult();
                await release.Task;
            }
        };
        using var first = await StartAsync(store, new Tallies(gate));
        using var second = await StartAsync(store, new Tallies(gate));
        var (_, follower) = await LeaderAndFollowerAsync(first, second);
        var asking = follower.Services.GetRequiredService<ProjectionManager>();
        Assert.False((await asking.GetStatusAsync(Tallies.ProjectionName)).IsRunningHere);

        var events = follower.Services.GetRequiredService<IEventStore>();
        await events.AppendAsync("tally-early", ExpectedVersion.NoStream, [Added(follower, "early", 1)]);
        var last = (await events.AppendAsync("tally-late", ExpectedVersion.NoStream, [Added(follower, "late", 2), Added(follower, "late", 3)])).LastPosition;

        var waiting = asking.WaitForPositionAsync(Tallies.ProjectionName, last);
        await held.Task.WaitAsync(Eventually.DefaultTimeout);
        Assert.False(waiting.IsCompleted, "the wait completed while the leader was still applying the events");

        release.SetResult();
        await waiting.WaitAsync(Eventually.DefaultTimeout);

        // What the wait promised: a read on the asking node now sees every event up to the position.
        var readModels = follower.Services.GetRequiredService<ReadModels>();
        Assert.Equal(new Tally("late", 5, 2), await readModels.GetAsync(Tallies.Table, "late"));
        Assert.Equal(new Tally("early", 1, 1), await readModels.GetAsync(Tallies.Table, "early"));
        await first.StopAsync();
        await second.StopAsync();
    }

    [Fact]
    public async Task WaitingForAPosition_OfAnInlineProjection_CompletesAtOnce_ItsWritesHavingCommittedWithTheEvents()
    {
        var store = NewStore();
        using var host = await StartAsync(store, new Tallies(), ProjectionMode.Inline);
        await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, token) =>
        {
            var counter = new Counter();
            counter.Add("inline-wait", 4);
            await services.GetRequiredService<AggregateRepository<Counter>>().SaveAsync(counter, cancellationToken: token);
        });
        var position = await host.Services.GetRequiredService<IEventStore>().GetLastPositionAsync();

        var manager = host.Services.GetRequiredService<ProjectionManager>();
        Assert.True(manager.WaitForPositionAsync(Tallies.ProjectionName, position).IsCompletedSuccessfully);
        Assert.Equal(4, (await host.Services.GetRequiredService<ReadModels>().GetAsync(Tallies.Table, "inline-wait"))!.Sum);
        await host.StopAsync();
    }
}
