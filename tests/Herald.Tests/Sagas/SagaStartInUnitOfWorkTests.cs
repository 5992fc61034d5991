using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Herald.Tests.Reliability;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Sagas;

/// <summary>
/// <see cref="SagaOrchestrator.StartInAsync{TData}"/>: a handler starts an orchestrated saga in its own unit of work; the
/// instance is saved with the handler's writes and runs in the background once they commit.
/// </summary>
public sealed class SagaStartInUnitOfWorkTests
{
    [MessageType("start-in-uow-order")]
    public sealed record PlaceOrder(string OrderId, bool FailAfterStart = false);

    public sealed class Data
    {
        public string? OrderId { get; set; }

        public int Steps { get; set; }
    }

    public sealed class Calls
    {
        public ConcurrentQueue<string> Steps { get; } = new();

        public ConcurrentQueue<(string OrderId, bool Started)> Starts { get; } = new();
    }

    private static readonly RetryPolicy NoRetries = RetryPolicy.Create(r => r.NoRetries());

    private static SagaDefinition<Data> Definition(Calls calls) =>
        SagaDefinition.Create<Data>("start-in-uow", s => s
            .Step("reserve", c => { calls.Steps.Enqueue($"{c.SagaId}:reserve"); c.Data.Steps++; return ValueTask.CompletedTask; }, retry: NoRetries)
            .Step("charge", c => { calls.Steps.Enqueue($"{c.SagaId}:charge"); c.Data.Steps++; return ValueTask.CompletedTask; }, retry: NoRetries));

    public sealed class StartHandler(SagaOrchestrator orchestrator, SagaDefinition<Data> definition, IUnitOfWork unitOfWork, Calls calls) : IMessageHandler<PlaceOrder>
    {
        public async ValueTask HandleAsync(PlaceOrder message, MessageContext context, CancellationToken cancellationToken)
        {
            var started = await orchestrator.StartInAsync(definition, message.OrderId, new Data { OrderId = message.OrderId }, unitOfWork, cancellationToken);
            calls.Starts.Enqueue((message.OrderId, started));
            if (message.FailAfterStart)
            {
                throw new InvalidOperationException("The handler failed after starting the saga.");
            }
        }
    }

    private static Task<ReliabilityHost> StartAsync(Calls calls) =>
        ReliabilityHost.StartAsync(
            h => h
                .AddMessageType<PlaceOrder>()
                .AddSaga(Definition(calls))
                .AddHandler<StartHandler>()
                .ConfigureRetries(r => r.NoRetries()),
            services => services.AddSingleton(calls));

    [Fact]
    public async Task ASagaStartedInAHandlersUnitOfWork_RunsOnceItCommits_AndAStartDeliveredAgainStartsNothing()
    {
        var calls = new Calls();
        await using var host = await StartAsync(calls);
        var store = host.Get<ISagaStore>();

        await host.Get<IMessageBus>().SendAsync(new PlaceOrder("o-1"));
        await Eventually.UntilAsync(async () => await store.LoadAsync("start-in-uow", "o-1") is { Status: SagaStatus.Completed }, "the started saga completes");
        await host.Get<IMessageBus>().SendAsync(new PlaceOrder("o-1"));
        await Eventually.UntilAsync(() => calls.Starts.Count == 2, "the second start is handled");

        Assert.Equal([("o-1", true), ("o-1", false)], calls.Starts);
        Assert.Equal(["o-1:reserve", "o-1:charge"], calls.Steps);
        var instance = (await store.LoadAsync("start-in-uow", "o-1"))!;
        Assert.Equal(["reserve", "charge"], instance.CompletedSteps);
        Assert.Empty(await host.DeadLetters.ListAsync(new DeadLetterQuery()));
    }

    [Fact]
    public async Task AStartInAUnitOfWorkThatRollsBack_SavesNoInstance_AndRunsNoStep()
    {
        var calls = new Calls();
        await using var host = await StartAsync(calls);

        await host.Get<IMessageBus>().SendAsync(new PlaceOrder("o-2", FailAfterStart: true));
        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        // A later start, committed, runs: the queue is live, so o-2 would have run by now had its start committed.
        await host.Get<IMessageBus>().SendAsync(new PlaceOrder("o-3"));
        await Eventually.UntilAsync(async () => await host.Get<ISagaStore>().LoadAsync("start-in-uow", "o-3") is { Status: SagaStatus.Completed }, "a committed start runs");

        Assert.Contains("failed after starting", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Null(await host.Get<ISagaStore>().LoadAsync("start-in-uow", "o-2"));
        Assert.DoesNotContain(calls.Steps, s => s.StartsWith("o-2", StringComparison.Ordinal));
    }

    [Fact]
    public async Task StartInAsync_WithoutAHostRunningSagas_SaysHowToFixIt()
    {
        // A provider whose hosted services never started: nothing runs sagas in it.
        await using var provider = new ServiceCollection().AddLogging().AddHerald(_ => { }).BuildServiceProvider();
        var orchestrator = provider.GetRequiredService<SagaOrchestrator>();
        await using var scope = provider.CreateAsyncScope();

        var error = await Assert.ThrowsAsync<InvalidOperationException>(async () =>
            await orchestrator.StartInAsync(Definition(new Calls()), "o-4", new Data(), scope.ServiceProvider.GetRequiredService<IUnitOfWork>()));

        Assert.Contains("register the saga with AddSaga", error.Message, StringComparison.Ordinal);
    }
}
