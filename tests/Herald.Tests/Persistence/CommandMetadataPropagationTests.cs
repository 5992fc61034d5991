using Herald.Cqrs;
using Herald.EventSourcing.Aggregates;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Persistence;

// Issue 12: a command sent over HTTP with the request's metadata passes its correlation on to what its handler sends.
public sealed class CommandMetadataPropagationTests
{
    [MessageType("metaprop-noted")]
    public sealed record Noted(string Text);

    public sealed record Note(string Text, string? CorrelationId = null) : ICommand;

    public sealed class NoteCommands(IOutbox outbox) : ICommandHandler<Note>
    {
        public ValueTask HandleAsync(Note command, CancellationToken cancellationToken) =>
            outbox.PublishAsync(new Noted(command.Text), command.CorrelationId is null ? null : new DeliveryOptions { CorrelationId = command.CorrelationId }, cancellationToken);
    }

    private static (ServiceProvider Services, InMemoryOutboxStore Outbox) Build()
    {
        var outbox = new InMemoryOutboxStore();
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton<IOutboxStore>(outbox);
        services.AddHerald(h => h.AddMessageType<Noted>().AddHandler<NoteCommands>().UseOutbox());
        return (services.BuildServiceProvider(new ServiceProviderOptions { ValidateScopes = true }), outbox);
    }

    [Fact]
    public async Task MessageAddedToTheOutboxByACommandHandler_CarriesTheCommandsCorrelationCauseAndUser()
    {
        var (services, outbox) = Build();
        await using var _ = services;

        await services.GetRequiredService<ICommandBus>().SendAsync(new Note("a"), new EventMetadata { CorrelationId = "flow-9", CausationId = "request-1", UserId = "ada" });

        var envelope = Assert.Single(await outbox.FetchPendingAsync(10)).Envelope;
        Assert.Equal("flow-9", envelope.CorrelationId);
        Assert.Equal("request-1", envelope.CausationId);
        Assert.Equal("ada", envelope.UserId);
    }

    [Fact]
    public async Task CorrelationSetInTheDeliveryOptions_WinsOverTheCommands()
    {
        var (services, outbox) = Build();
        await using var _ = services;

        await services.GetRequiredService<ICommandBus>().SendAsync(new Note("b", CorrelationId: "chosen"), new EventMetadata { CorrelationId = "flow-9" });

        Assert.Equal("chosen", Assert.Single(await outbox.FetchPendingAsync(10)).Envelope.CorrelationId);
    }

    [Fact]
    public async Task CommandWithoutMetadata_LetsTheMessageStartItsOwnFlow()
    {
        var (services, outbox) = Build();
        await using var _ = services;

        await services.GetRequiredService<ICommandBus>().SendAsync(new Note("c"));

        var envelope = Assert.Single(await outbox.FetchPendingAsync(10)).Envelope;
        Assert.Equal(envelope.MessageId.ToString(), envelope.CorrelationId);
        Assert.Null(envelope.CausationId);
    }
}
