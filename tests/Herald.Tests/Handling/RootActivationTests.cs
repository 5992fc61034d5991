using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Handling;

/// <summary>
/// A scoped handler whose dependencies are all singletons is built from the root without a DI scope (issue 9: in-process
/// allocations); anything a scope could change keeps the scope.
/// </summary>
public sealed class RootActivationTests
{
    [Fact]
    public void AHandlerOfSingletons_IsBuiltFromTheRoot_IncludingOpenGenericSingletonsSuchAsLoggers()
    {
        var services = Services();
        services.AddScoped<SingletonsHandler>();

        Assert.NotNull(RootActivation.TryCreate(typeof(SingletonsHandler), services));
    }

    [Theory]
    [InlineData(typeof(ScopedDependencyHandler), "a scoped dependency")]
    [InlineData(typeof(ProviderHandler), "the service provider")]
    [InlineData(typeof(DisposableHandler), "a disposable handler")]
    [InlineData(typeof(OptionalHandler), "an optional parameter")]
    [InlineData(typeof(TwoConstructorsHandler), "two public constructors")]
    public void AHandlerAScopeCouldChange_KeepsItsScope(Type handler, string why)
    {
        var services = Services();
        services.AddScoped<ScopedThing>();
        services.AddScoped(handler);

        Assert.True(RootActivation.TryCreate(handler, services) is null, $"{handler.Name} has {why}: it must keep its scope.");
    }

    [Fact]
    public void ARegistrationMadeLater_DecidesAsTheContainerWould()
    {
        var services = Services();
        services.AddScoped<SingletonsHandler>();
        services.AddScoped<Counter>(); // the last registration wins: Counter is now scoped

        Assert.Null(RootActivation.TryCreate(typeof(SingletonsHandler), services));

        var factoryMade = Services();
        factoryMade.AddScoped(_ => new SingletonsHandler(new Counter(), NullLog()));
        Assert.Null(RootActivation.TryCreate(typeof(SingletonsHandler), factoryMade));
    }

    [Fact]
    public async Task ARootBuiltHandler_IsANewInstancePerMessage_AndWhatItSendsStillFollowsTheMessage()
    {
        var counter = new Counter();
        using var host = await StartAsync(counter, h => h.AddHandler<SingletonsHandler>().AddHandler<ForwardHandler>().AddHandler<EchoHandler>());
        var bus = host.Services.GetRequiredService<IMessageBus>();

        for (var i = 0; i < 5; i++)
        {
            await bus.SendAsync(new Tick(i), new DeliveryOptions { CorrelationId = "flow-" + i });
        }

        await Eventually.UntilAsync(() => counter.Instances.Count == 5 && counter.Echoes.Count == 5, "5 ticks and their 5 echoes are handled");
        Assert.Equal(5, counter.Instances.Distinct().Count());

        // ForwardHandler sends through the injected bus, not the context: the ambient unit of work still carries the flow.
        Assert.Equal(Enumerable.Range(0, 5).Select(i => "flow-" + i).Order(), counter.Echoes.Select(e => e.CorrelationId!).Order());
    }

    [Fact]
    public async Task AHandlerWithAScopedDependency_SharesItWithTheMessagesScope()
    {
        var counter = new Counter();
        using var host = await StartAsync(counter, h => h.AddHandler<ScopedDependencyHandler>(), s => s.AddScoped<ScopedThing>());

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Tick(1));

        await Eventually.UntilAsync(() => counter.SameScope.Count == 1, "the tick is handled");
        Assert.True(counter.SameScope.Single(), "the handler's scoped dependency is the one of MessageContext.Services");
    }

    [Fact]
    public void ANewFlow_CorrelatesToItsOwnId_AndACopyWithAnotherIdKeepsTheFlow()
    {
        var registry = new MessageTypeRegistry();
        registry.Register(typeof(Tick));
        var factory = new EnvelopeFactory(registry, new SystemTextJsonMessageSerializer(), TimeProvider.System);

        var first = factory.Create(new Tick(1));
        var copy = first with { MessageId = Guid.CreateVersion7() };
        var joined = factory.Create(new Tick(2), correlationId: "flow");

        Assert.Equal(first.MessageId.ToString(), first.CorrelationId);
        Assert.Equal(first.MessageId.ToString(), copy.CorrelationId);
        Assert.Equal("flow", joined.CorrelationId);
        Assert.Null((first with { CorrelationId = null }).CorrelationId);

        // Equality is by value, however the correlation id is held.
        var spelled = first with { CorrelationId = first.MessageId.ToString() };
        Assert.Equal(first, spelled);
        Assert.Equal(first.GetHashCode(), spelled.GetHashCode());
        Assert.NotEqual(first, first with { CorrelationId = "other" });
    }

    private static ServiceCollection Services()
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton<Counter>();
        return services;
    }

    private static ILogger<SingletonsHandler> NullLog() => Microsoft.Extensions.Logging.Abstractions.NullLogger<SingletonsHandler>.Instance;

    private static async Task<IHost> StartAsync(Counter counter, Action<Herald.Hosting.HeraldBuilder> configure, Action<IServiceCollection>? more = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(counter);
        more?.Invoke(builder.Services);
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.EndpointName = "root-activation");
            configure(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [MessageType("root-tick")]
    public sealed record Tick(int Number);

    [MessageType("root-echo")]
    public sealed record Echo(int Number);

    public sealed class Counter
    {
        public ConcurrentQueue<object> Instances { get; } = new();

        public ConcurrentQueue<Envelope> Echoes { get; } = new();

        public ConcurrentQueue<bool> SameScope { get; } = new();
    }

    public sealed class ScopedThing;

    public sealed class SingletonsHandler(Counter counter, ILogger<SingletonsHandler> logger) : IMessageHandler<Tick>
    {
        public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken)
        {
            _ = logger.IsEnabled(LogLevel.Trace);
            counter.Instances.Enqueue(this);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ForwardHandler(IMessageBus bus) : IMessageHandler<Tick>
    {
        public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken) =>
            bus.SendAsync(new Echo(message.Number), cancellationToken: cancellationToken);
    }

    public sealed class EchoHandler(Counter counter) : IMessageHandler<Echo>
    {
        public ValueTask HandleAsync(Echo message, MessageContext context, CancellationToken cancellationToken)
        {
            counter.Echoes.Enqueue(context.Envelope);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ScopedDependencyHandler(Counter counter, ScopedThing thing) : IMessageHandler<Tick>
    {
        public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken)
        {
            counter.SameScope.Enqueue(ReferenceEquals(thing, context.Services.GetRequiredService<ScopedThing>()));
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ProviderHandler(IServiceProvider services) : IMessageHandler<Tick>
    {
        public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken) =>
            ValueTask.CompletedTask;

        public override string ToString() => services.ToString() ?? "";
    }

    public sealed class DisposableHandler(Counter counter) : IMessageHandler<Tick>, IDisposable
    {
        public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken) =>
            ValueTask.CompletedTask;

        public void Dispose() => counter.Instances.Clear();
    }

    public sealed class OptionalHandler(Counter? counter = null) : IMessageHandler<Tick>
    {
        public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken) =>
            ValueTask.CompletedTask;

        public override string ToString() => counter?.ToString() ?? "";
    }

    public sealed class TwoConstructorsHandler : IMessageHandler<Tick>
    {
        public TwoConstructorsHandler()
        {
        }

        public TwoConstructorsHandler(Counter counter) => _ = counter;

        public ValueTask HandleAsync(Tick message, MessageContext context, CancellationToken cancellationToken) =>
            ValueTask.CompletedTask;
    }
}
