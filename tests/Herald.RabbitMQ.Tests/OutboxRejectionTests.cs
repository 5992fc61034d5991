using Herald.Handling;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Herald.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// Issue 10 on a real broker: a topology conflict is a permanent send error, so the outbox relay dead-letters the message
/// as rejected (seen through the DeadLetterManager) and sends the messages behind it, instead of retrying it forever.
/// </summary>
public sealed class OutboxRejectionTests : RabbitMqTestBase
{
    [Fact]
    public async Task OutboxPublish_ToAnExchangeDeclaredWithOtherArguments_IsDeadLetteredAsRejected_AndTheMessagesBehindItAreSent_Issue10()
    {
        var conflicting = Name("conflicting");
        var fine = Name("fine");
        var subscriber = Name("fine-subscriber");
        var channel = await CreateRawChannelAsync();

        // Herald declares a topic as a durable fanout exchange; another client owns this name as a direct one.
        await channel.ExchangeDeclareAsync(conflicting, ExchangeType.Direct, durable: true, autoDelete: false);
        await channel.ExchangeDeclareAsync(fine, ExchangeType.Fanout, durable: true, autoDelete: false);
        await channel.QueueDeclareAsync(subscriber, durable: true, exclusive: false, autoDelete: false);
        await channel.QueueBindAsync(subscriber, fine, string.Empty);

        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = BrokerAdmin.AmqpUri;
                o.ClientProvidedName = Prefix;
            })
            .AddMessageType<Conflicting>(conflicting)
            .AddMessageType<Fine>(fine)
            .UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(100))
            .Configure(o => o.EndpointName = Name("endpoint")));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            await using (var scope = host.Services.CreateAsyncScope())
            {
                var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
                await outbox.PublishAsync(new Conflicting(1));
                await outbox.PublishAsync(new Fine(2));
                await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
            }

            var manager = host.Services.GetRequiredService<DeadLetterManager>();
            var deadLetter = await Eventually.ValueAsync(
                async () => (await manager.ListAsync(new DeadLetterQuery { Endpoint = conflicting })).Items.FirstOrDefault(),
                "the conflicting publish is dead-lettered");
            Assert.Equal(DeadLetterCause.SendRejected, deadLetter.Cause);
            Assert.Contains("PRECONDITION_FAILED", deadLetter.ErrorMessage, StringComparison.Ordinal);
            await Eventually.UntilAsync(async () => await channel.MessageCountAsync(subscriber) == 1, "the message behind it reaches its subscriber");
            await Eventually.UntilAsync(async () => await host.Services.GetRequiredService<IOutboxStore>().CountPendingAsync() == 0, "no row is left pending");
            Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = conflicting })).Items);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task OutboxPublish_ToATopicWhoseExchangeWasDeletedBehindHeraldsBack_IsDeclaredAgainAndDelivered_NotDeadLettered()
    {
        var topic = Name("topic");
        var handled = new System.Collections.Concurrent.ConcurrentDictionary<int, int>();
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = BrokerAdmin.AmqpUri;
                o.ClientProvidedName = Prefix;
            })
            .AddMessageType<Fine>(topic)
            .AddHandler<FineHandler>()
            .UseOutbox(o =>
            {
                o.PollInterval = TimeSpan.FromMilliseconds(100);
                o.MinBackoff = TimeSpan.FromMilliseconds(50);
            })
            .Configure(o => o.EndpointName = Name("endpoint")));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            async Task PublishAsync(int number)
            {
                await using var scope = host.Services.CreateAsyncScope();
                await scope.ServiceProvider.GetRequiredService<IOutbox>().PublishAsync(new Fine(number));
                await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
            }

            await PublishAsync(1);
            await Eventually.UntilAsync(() => handled.ContainsKey(1), "the first publish is handled");

            // An operator (or a broker that lost it) deletes the topic's exchange, and with it its binding to the endpoint's queue.
            await BrokerAdmin.DeleteExchangeAsync(topic);
            await PublishAsync(2);

            await Eventually.UntilAsync(
                async () => handled.ContainsKey(2) || await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All) > 0,
                "the publish that met the missing exchange is handled or dead-lettered");
            var deadLetters = await host.Services.GetRequiredService<DeadLetterManager>().ListAsync(new DeadLetterQuery());
            Assert.True(deadLetters.Items.Count == 0, $"dead-lettered: {string.Join(" | ", deadLetters.Items.Select(d => $"{d.Cause}: {d.ErrorMessage}"))}");
            await Eventually.UntilAsync(() => handled.ContainsKey(2), "the publish is handled once the exchange is declared again");
        }
        finally
        {
            await host.StopAsync();
        }
    }

    public sealed class FineHandler(System.Collections.Concurrent.ConcurrentDictionary<int, int> handled) : IMessageHandler<Fine>
    {
        public ValueTask HandleAsync(Fine message, MessageContext context, CancellationToken cancellationToken)
        {
            handled.AddOrUpdate(message.Number, 1, (_, n) => n + 1);
            return ValueTask.CompletedTask;
        }
    }

    public sealed record Conflicting(int Number);

    public sealed record Fine(int Number);
}
