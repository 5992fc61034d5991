using Herald.Internal;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;

namespace Herald.Hosting;

/// <summary>Sagas: orchestrated sagas, resumed when no runner drives them, and state machines.</summary>
public sealed partial class HeraldBuilder
{
    private readonly HashSet<string> _sagas = new(StringComparer.Ordinal);

    /// <summary>
    /// Registers an orchestrated saga: start instances with <see cref="SagaOrchestrator.StartAsync{TData}"/>, or within a
    /// handler's unit of work with <see cref="SagaOrchestrator.StartInAsync{TData}"/> (run in the background once it commits); every instance
    /// of it left running or compensating (a crash, a stop) is resumed in the background, at start and by a periodic sweep.
    /// </summary>
    /// <exception cref="InvalidSagaDefinitionException">Another saga with this name is registered.</exception>
    public HeraldBuilder AddSaga<TData>(SagaDefinition<TData> definition)
        where TData : class
    {
        ArgumentNullException.ThrowIfNull(definition);
        if (!_sagas.Add(definition.Name))
        {
            throw new InvalidSagaDefinitionException(definition.Name, [$"A saga named '{definition.Name}' is registered already; saga names are unique."]);
        }

        Services.AddSingleton(definition);
        Services.AddSingleton<ISagaResumption>(new SagaResumption<TData>(definition));
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, SagaRunQueue>());
        AddSagaSweep();
        return this;
    }

    private void AddSagaSweep()
    {
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, SagaResumeService>());
        Services.AddCheckedOptions<SagaOptions>(configure: null, SagaOptions.Check);
    }

    /// <summary>
    /// Configures how unfinished orchestrated sagas are found and resumed: the sweep's interval, and how long an instance of
    /// a store shared by several processes must go without a save before another process takes it over.
    /// </summary>
    public HeraldBuilder ConfigureSagas(Action<SagaOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Services.AddCheckedOptions(configure, SagaOptions.Check);
        return this;
    }

    /// <summary>
    /// Registers a state-machine saga: a handler for every event it correlates, which loads the instance, runs the
    /// transition of its state and saves the new state in the message's unit of work. One machine per data type.
    /// </summary>
    /// <exception cref="InvalidSagaDefinitionException">Another saga with this name is registered.</exception>
    public HeraldBuilder AddSaga<TData>(SagaStateMachine<TData> machine)
        where TData : class, new()
    {
        ArgumentNullException.ThrowIfNull(machine);
        if (!_sagas.Add(machine.Name))
        {
            throw new InvalidSagaDefinitionException(machine.Name, [$"A saga named '{machine.Name}' is registered already; saga names are unique."]);
        }

        Services.AddSingleton(machine);
        foreach (var eventType in machine.Events.Keys)
        {
            AddHandler(typeof(SagaStateMachineHandler<,>).MakeGenericType(typeof(TData), eventType), ServiceLifetime.Scoped);
        }

        // The sweep sends again a timeout that a crash lost between its transition's commit and its send (no outbox).
        Services.AddSingleton(new SagaStateMachineRegistration(machine.Name));
        AddSagaSweep();
        return this;
    }
}
