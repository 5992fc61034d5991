using Herald.Benchmarks.InProcess;

namespace Herald.Benchmarks.Sagas;

/// <summary>One state-machine saga under test: a bus to publish the order events on and a count of the events it finished.</summary>
internal interface ISagaContender : IAsyncDisposable
{
    string Name { get; }

    /// <summary>One line on how the host and its saga repository were configured, for the results file.</summary>
    string Setup { get; }

    /// <summary>
    /// Counts an event only once it is finished: the saga instance saved and the delivery settled, so the next phase's
    /// event for the same order can never overtake it.
    /// </summary>
    HandledCounter Finished { get; }

    Task StartAsync(CancellationToken cancellationToken);

    /// <summary>Publishes one event through the contender's bus, as an application would.</summary>
    ValueTask PublishAsync<TEvent>(TEvent message, CancellationToken cancellationToken)
        where TEvent : class;

    /// <summary>The state the order's saga instance is in, or null when there is none (checks that the transitions ran).</summary>
    Task<string?> StateOfAsync(Guid orderId, CancellationToken cancellationToken);
}
