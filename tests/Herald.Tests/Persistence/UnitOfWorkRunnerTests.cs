using System.Text.Json.Nodes;
using Herald.Conformance.EventSourcing;
using Herald.Cqrs;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.EventSourcing.Upcasting;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Persistence;

public sealed class UnitOfWorkRunnerTests
{
    [MessageType("uowrun-opened")]
    public sealed record Opened(string Id);

    [MessageType("uowrun-note")]
    public sealed record Note(string Text);

    public sealed record OpenTicket(string Id) : ICommand;

    public sealed record OpenTwo(string First, string Second) : ICommand;

    public sealed record OpenThenFail(string Id) : ICommand;

    public sealed record TryOpenThenFail(string Id, string Other) : ICommand;

    public sealed record OpenThenRefuse(string Id) : ICommand;

    public sealed record TryOpenThenRefuse(string Id, string Other) : ICommand;

    public sealed class Ticket : Aggregate
    {
        public void Open(string id) => Raise(new Opened(id));

        protected override void When(object @event)
        {
            if (@event is Opened opened)
            {
                Id = opened.Id;
            }
        }
    }

    public sealed class TicketCommands(AggregateRepository<Ticket> tickets, ICommandBus commands) : ICommandHandler<OpenTicket>, ICommandHandler<OpenTwo>,
        ICommandHandler<OpenThenFail>, ICommandHandler<TryOpenThenFail>, ICommandHandler<OpenThenRefuse>, ICommandHandler<TryOpenThenRefuse>
    {
        public async ValueTask HandleAsync(OpenTicket command, CancellationToken cancellationToken)
        {
            var ticket = await tickets.LoadAsync(command.Id, cancellationToken);
            if (ticket.Version > 0)
            {
                throw new InvalidOperationException($"ticket {command.Id} is open already");
            }

            ticket.Open(command.Id);
            await tickets.SaveAsync(ticket, cancellationToken: cancellationToken);
        }

        // Sends the second command from inside the first: it joins this unit of work, so both commit or neither.
        public async ValueTask HandleAsync(OpenTwo command, CancellationToken cancellationToken)
        {
            await commands.SendAsync(new OpenTicket(command.First), cancellationToken);
            await commands.SendAsync(new OpenTicket(command.Second), cancellationToken);
        }

        public async ValueTask HandleAsync(OpenThenFail command, CancellationToken cancellationToken)
        {
            await HandleAsync(new OpenTicket(command.Id), cancellationToken);
            throw new InvalidOperationException($"ticket {command.Id} fails after its save");
        }

        // Catches the failure of the command it sent, and goes on to write its own ticket.
        public async ValueTask HandleAsync(TryOpenThenFail command, CancellationToken cancellationToken)
        {
            try
            {
                await commands.SendAsync(new OpenThenFail(command.Id), cancellationToken);
            }
            catch (InvalidOperationException)
            {
            }

            await commands.SendAsync(new OpenTicket(command.Other), cancellationToken);
        }

        // Saves its ticket, then sends a command its validation refuses, and lets the refusal through.
        public async ValueTask HandleAsync(OpenThenRefuse command, CancellationToken cancellationToken)
        {
            await HandleAsync(new OpenTicket(command.Id), cancellationToken);
            await commands.SendAsync(new OpenTicket(" "), cancellationToken);
        }

        // Catches the refusal that the command it sent let through after its save, and goes on to write its own ticket.
        public async ValueTask HandleAsync(TryOpenThenRefuse command, CancellationToken cancellationToken)
        {
            try
            {
                await commands.SendAsync(new OpenThenRefuse(command.Id), cancellationToken);
            }
            catch (Herald.Cqrs.Validation.ValidationException)
            {
            }

            await commands.SendAsync(new OpenTicket(command.Other), cancellationToken);
        }
    }

    private static ServiceProvider Build(Action<HeraldBuilder>? configure = null)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddHerald(h =>
        {
            h.AddMessageType<Opened>().AddMessageType<Note>().AddAggregate<Ticket>().AddHandler<TicketCommands>();
            configure?.Invoke(h);
        });
        return services.BuildServiceProvider(new ServiceProviderOptions { ValidateScopes = true });
    }

    private static async Task<List<RecordedEvent>> ReadAsync(IServiceProvider services, string id)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in services.GetRequiredService<IEventStore>().ReadStreamAsync(StreamName.For("ticket", id)))
        {
            events.Add(recorded);
        }

        return events;
    }

    [Fact]
    public async Task CommandMetadata_IsStampedOnTheStoredEvents()
    {
        await using var services = Build();
        var id = Guid.NewGuid().ToString("N");

        await services.GetRequiredService<ICommandBus>().SendAsync(new OpenTicket(id), new EventMetadata { CorrelationId = "flow-7", CausationId = "request-3", UserId = "ada" });

        var stored = Assert.Single(await ReadAsync(services, id));
        Assert.Equal("flow-7", stored.Envelope.CorrelationId);
        Assert.Equal("request-3", stored.Envelope.CausationId);
        Assert.Equal("ada", stored.Envelope.UserId);
    }

    [Fact]
    public async Task CommandSentFromACommandHandler_JoinsItsUnitOfWork_SoAFailureInEitherWritesNeither()
    {
        await using var services = Build();
        var taken = Guid.NewGuid().ToString("N");
        var fresh = Guid.NewGuid().ToString("N");
        var bus = services.GetRequiredService<ICommandBus>();
        await bus.SendAsync(new OpenTicket(taken));

        // The inner command for the first ticket succeeds, the one for the second fails: had the first committed on its own,
        // its ticket would be stored.
        await Assert.ThrowsAsync<InvalidOperationException>(() => bus.SendAsync(new OpenTwo(fresh, taken)).AsTask());

        Assert.Empty(await ReadAsync(services, fresh));
        Assert.Single(await ReadAsync(services, taken));
    }

    // The inner command saved, then threw; the outer handler caught it and returned, and the outer unit of work committed the
    // failed command's ticket (and the outer one's) as if it had succeeded.
    [Fact]
    public async Task JoinedCommandThatFailsAfterItsSave_CaughtByItsSender_RollsBackTheWholeUnitOfWork_AndFailsIt()
    {
        await using var services = Build();
        var failing = Guid.NewGuid().ToString("N");
        var other = Guid.NewGuid().ToString("N");
        var bus = services.GetRequiredService<ICommandBus>();

        var thrown = await Assert.ThrowsAnyAsync<HeraldException>(() => bus.SendAsync(new TryOpenThenFail(failing, other)).AsTask());

        Assert.IsType<InvalidOperationException>(thrown.InnerException);
        Assert.Empty(await ReadAsync(services, failing));
        Assert.Empty(await ReadAsync(services, other));

        // The doom was that unit of work's: the next command commits.
        await bus.SendAsync(new OpenTicket(other));
        Assert.Single(await ReadAsync(services, other));
    }

    [Fact]
    public async Task JoinedQueryThatFails_CaughtByItsSender_LeavesTheUnitOfWorkToCommit()
    {
        await using var services = Build(h => h.AddHandler<FailingQueries>());
        var id = Guid.NewGuid().ToString("N");

        await services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (provider, token) =>
        {
            await Assert.ThrowsAsync<InvalidOperationException>(() => provider.GetRequiredService<IQueryBus>().QueryAsync(new FailingQuery(), token).AsTask());
            await provider.GetRequiredService<ICommandBus>().SendAsync(new OpenTicket(id), token);
        });

        Assert.Single(await ReadAsync(services, id));
    }

    // A command its validation refuses runs neither its handler nor another behaviour, so it enlisted nothing; yet the refusal
    // doomed the unit of work it joined, so a sender that caught it to take another way failed all the same (as a handled
    // message: retried, then dead-lettered, its other way never taken).
    [Fact]
    public async Task JoinedCommandRefusedByItsValidation_CaughtByItsSender_LeavesTheUnitOfWorkToCommit()
    {
        await using var services = Build(h => h.AddValidator<NoBlankTicket>());
        var id = Guid.NewGuid().ToString("N");

        await services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (provider, token) =>
        {
            var commands = provider.GetRequiredService<ICommandBus>();
            await Assert.ThrowsAsync<Herald.Cqrs.Validation.ValidationException>(() => commands.SendAsync(new OpenTicket(" "), token).AsTask());
            await commands.SendAsync(new OpenTicket(id), token);
        });

        Assert.Single(await ReadAsync(services, id));
    }

    // The refusal is only its own command's: a joined command that saved and then let another command's refusal through
    // failed after its writes, and still dooms the unit of work it joined.
    [Fact]
    public async Task JoinedCommandFailingWithAnotherCommandsRefusal_AfterItsSave_StillRollsBackTheWholeUnitOfWork()
    {
        await using var services = Build(h => h.AddValidator<NoBlankTicket>());
        var saved = Guid.NewGuid().ToString("N");
        var other = Guid.NewGuid().ToString("N");

        var thrown = await Assert.ThrowsAnyAsync<HeraldException>(() => services.GetRequiredService<ICommandBus>().SendAsync(new TryOpenThenRefuse(saved, other)).AsTask());

        Assert.IsType<Herald.Cqrs.Validation.ValidationException>(thrown.InnerException);
        // A message failing so is dead-lettered at once, as the refusal would be: it was retried to exhaustion.
        Assert.True(Herald.Reliability.Retry.RetryPolicy.Default.IsNeverRetried(thrown));
        Assert.Empty(await ReadAsync(services, saved));
        Assert.Empty(await ReadAsync(services, other));
    }

    public sealed class NoBlankTicket : Herald.Cqrs.Validation.IValidator<OpenTicket>
    {
        public IEnumerable<Herald.Cqrs.Validation.ValidationError> Validate(OpenTicket instance) =>
            string.IsNullOrWhiteSpace(instance.Id) ? [new("Id", "is blank")] : [];
    }

    public sealed record FailingQuery : IQuery<int>;

    public sealed class FailingQueries : IQueryHandler<FailingQuery, int>
    {
        public ValueTask<int> HandleAsync(FailingQuery query, CancellationToken cancellationToken) => throw new InvalidOperationException("no answer");
    }

    // A handler that leaves work running (fire and forget) leaves its attempt ambient on that work's flow: a command sent
    // from there once the attempt ended joined it, and its writes went to a unit of work nothing commits.
    [Fact]
    public async Task CommandSentAfterTheHandledMessagesAttemptEnded_CommitsInAUnitOfWorkOfItsOwn()
    {
        await using var services = Build();
        var id = Guid.NewGuid().ToString("N");
        var incoming = services.GetRequiredService<EnvelopeFactory>().Create(new Note("go"));
        var context = new MessageContext(incoming, new Note("go"), "tickets", services, services.GetRequiredService<IMessageBus>(), CancellationToken.None);
        await using (context)
        {
            // A light handler's attempt: ambient, but it never asked for its scope.
            UnitOfWorkRunner.Enter(context);
        }

        await services.GetRequiredService<ICommandBus>().SendAsync(new OpenTicket(id));

        Assert.Single(await ReadAsync(services, id));
    }

    [Fact]
    public async Task RepositoryFromAScopeNobodyCommits_RefusesToSave_InsteadOfLosingTheEvents()
    {
        await using var services = Build();
        await using var scope = services.CreateAsyncScope();
        var tickets = scope.ServiceProvider.GetRequiredService<AggregateRepository<Ticket>>();
        var ticket = await tickets.LoadAsync("loose");
        ticket.Open("loose");

        var refused = await Assert.ThrowsAsync<InvalidOperationException>(() => tickets.SaveAsync(ticket));
        Assert.Contains("UnitOfWorkRunner", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Runner_CommitsOnReturn_AndRollsBackWhenTheWorkThrows()
    {
        await using var services = Build();
        var runner = services.GetRequiredService<UnitOfWorkRunner>();
        var kept = Guid.NewGuid().ToString("N");
        var dropped = Guid.NewGuid().ToString("N");

        await runner.RunAsync(async (provider, ct) =>
        {
            var tickets = provider.GetRequiredService<AggregateRepository<Ticket>>();
            var ticket = await tickets.LoadAsync(kept, ct);
            ticket.Open(kept);
            await tickets.SaveAsync(ticket, cancellationToken: ct);
        });
        await Assert.ThrowsAsync<TimeoutException>(() => runner.RunAsync(async (provider, ct) =>
        {
            var tickets = provider.GetRequiredService<AggregateRepository<Ticket>>();
            var ticket = await tickets.LoadAsync(dropped, ct);
            ticket.Open(dropped);
            await tickets.SaveAsync(ticket, cancellationToken: ct);
            throw new TimeoutException("the work failed after saving");
        }).AsTask());

        Assert.Single(await ReadAsync(services, kept));
        Assert.Empty(await ReadAsync(services, dropped));
    }

    [Fact]
    public void TwoPersistencePackages_Throw()
    {
        var services = new ServiceCollection();

        var error = Assert.Throws<InvalidOperationException>(() => services.AddHerald(h => h
            .UsePersistence("Herald.One", _ => throw new NotSupportedException())
            .UsePersistence("Herald.Two", _ => throw new NotSupportedException())));

        Assert.Contains("Herald.One", error.Message, StringComparison.Ordinal);
        Assert.Contains("Herald.Two", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HandledMessage_StampsItsCorrelationCausationAndAuthenticatedUserOnTheStoredEvents()
    {
        await using var services = Build();
        var id = Guid.NewGuid().ToString("N");
        var incoming = services.GetRequiredService<EnvelopeFactory>().Create(new Note("go"), correlationId: "flow-9", userId: "claimed");
        var context = new MessageContext(incoming, new Note("go"), "tickets", services, services.GetRequiredService<IMessageBus>(), CancellationToken.None) { UserId = "grace" };
        await using (context)
        {
            UnitOfWorkRunner.Enter(context);
            var tickets = context.Services.GetRequiredService<AggregateRepository<Ticket>>();
            var ticket = await tickets.LoadAsync(id);
            ticket.Open(id);
            await tickets.SaveAsync(ticket);
            await context.UnitOfWork.CommitAsync();
        }

        var stored = Assert.Single(await ReadAsync(services, id));
        Assert.Equal("flow-9", stored.Envelope.CorrelationId);
        Assert.Equal(incoming.MessageId.ToString(), stored.Envelope.CausationId);
        Assert.Equal("grace", stored.Envelope.UserId);
    }

    // Issue 10: the wire's user id is a claim; without an authenticated user the stored events carry none.
    [Fact]
    public async Task HandledMessage_WithOnlyAClaimedUser_StoresEventsWithoutAUser()
    {
        await using var services = Build();
        var id = Guid.NewGuid().ToString("N");
        var incoming = services.GetRequiredService<EnvelopeFactory>().Create(new Note("go"), userId: "mallory");
        var context = new MessageContext(incoming, new Note("go"), "tickets", services, services.GetRequiredService<IMessageBus>(), CancellationToken.None);
        await using (context)
        {
            UnitOfWorkRunner.Enter(context);
            var tickets = context.Services.GetRequiredService<AggregateRepository<Ticket>>();
            var ticket = await tickets.LoadAsync(id);
            ticket.Open(id);
            await tickets.SaveAsync(ticket);
            await context.UnitOfWork.CommitAsync();
        }

        Assert.Equal("mallory", context.ClaimedUserId);
        Assert.Null(Assert.Single(await ReadAsync(services, id)).Envelope.UserId);
    }

    [Fact]
    public async Task AttemptThatCreatesItsScopeLate_BecomesAmbientThen_SoItsRepositorySavesAndItCommits()
    {
        await using var services = Build();
        var id = Guid.NewGuid().ToString("N");
        var incoming = services.GetRequiredService<EnvelopeFactory>().Create(new Note("go"));
        var context = new MessageContext(incoming, new Note("go"), "tickets", services, services.GetRequiredService<IMessageBus>(), CancellationToken.None);
        await using (context)
        {
            // As a singleton handler would: the pipeline made nothing ambient, the handler asks for the scope itself.
            var tickets = context.Services.GetRequiredService<AggregateRepository<Ticket>>();
            var ticket = await tickets.LoadAsync(id);
            ticket.Open(id);
            await tickets.SaveAsync(ticket);
            Assert.True(context.HasUnitOfWork);
            await context.UnitOfWork.CommitAsync();
        }

        Assert.Equal(incoming.MessageId.ToString(), Assert.Single(await ReadAsync(services, id)).Envelope.CausationId);
    }

    [Fact]
    public async Task RepositoryFromDI_LoadsThroughTheRegisteredUpcasters_AsTheConsumingPipelineDoes()
    {
        var upcasters = new EventUpcasterRegistry()
            .Add(ConformanceCounter.IncrementedType, 1, body => new JsonObject { ["amount"] = body["value"]!.GetValue<int>() })
            .Add(ConformanceCounter.IncrementedType, 2, body =>
            {
                body["note"] = "upcast";
                return body;
            });
        var collection = new ServiceCollection();
        collection.AddLogging();
        collection.AddSingleton(upcasters);
        collection.AddHerald(h => h.AddMessageType<CounterIncremented>(ConformanceCounter.IncrementedType, 3).AddAggregate<ConformanceCounter>(new AggregateOptions { Category = "counter" }));
        await using var services = collection.BuildServiceProvider(new ServiceProviderOptions { ValidateScopes = true });
        var id = Guid.NewGuid().ToString("N");
        var factory = services.GetRequiredService<EnvelopeFactory>();
        await services.GetRequiredService<IEventStore>().AppendAsync(StreamName.For("counter", id), ExpectedVersion.NoStream,
        [
            factory.Create(new CounterIncremented(0, null)) with { SchemaVersion = 1, Body = "{\"value\":2}"u8.ToArray() },
            factory.Create(new CounterIncremented(3, "v3")),
        ]);

        await using var scope = services.CreateAsyncScope();
        var counter = await scope.ServiceProvider.GetRequiredService<AggregateRepository<ConformanceCounter>>().LoadAsync(id);

        Assert.Equal((5, 2L), (counter.Total, counter.Version));
        Assert.Equal(["upcast", "v3"], counter.Notes);
    }

    [Fact]
    public async Task RepositoryLoad_OfAnEventBelowTheRegisteredVersionThatNoUpcasterMigrates_Throws_InsteadOfReadingItAsTheCurrentShape()
    {
        var collection = new ServiceCollection();
        collection.AddLogging();
        collection.AddHerald(h => h.AddMessageType<CounterIncremented>(ConformanceCounter.IncrementedType, 3).AddAggregate<ConformanceCounter>(new AggregateOptions { Category = "counter" }));
        await using var services = collection.BuildServiceProvider(new ServiceProviderOptions { ValidateScopes = true });
        var id = Guid.NewGuid().ToString("N");
        var factory = services.GetRequiredService<EnvelopeFactory>();
        await services.GetRequiredService<IEventStore>().AppendAsync(StreamName.For("counter", id), ExpectedVersion.NoStream,
            [factory.Create(new CounterIncremented(0, null)) with { SchemaVersion = 1, Body = "{\"value\":2}"u8.ToArray() }]);

        await using var scope = services.CreateAsyncScope();
        var error = await Assert.ThrowsAsync<AggregateLoadException>(() => scope.ServiceProvider.GetRequiredService<AggregateRepository<ConformanceCounter>>().LoadAsync(id));

        var cause = Assert.IsType<EventUpcastingException>(error.InnerException);
        Assert.Equal(1, cause.SchemaVersion);
        Assert.Contains("registered at v3", cause.Message, StringComparison.Ordinal);
    }
}
