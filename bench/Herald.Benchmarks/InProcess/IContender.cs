namespace Herald.Benchmarks.InProcess;

/// <summary>One library under test: started once, then asked to move a number of messages from producers to its handler.</summary>
internal interface IContender : IAsyncDisposable
{
    /// <summary>Row name in the results table.</summary>
    string Name { get; }

    /// <summary>How it is configured, for the notes under the table.</summary>
    string Setup { get; }

    /// <summary>Builds and starts the host.</summary>
    Task StartAsync(CancellationToken cancellationToken);

    /// <summary>Publishes <paramref name="messages"/> messages from <paramref name="producers"/> tasks and returns once all were handled.</summary>
    Task RunAsync(int messages, int producers, CancellationToken cancellationToken);
}
