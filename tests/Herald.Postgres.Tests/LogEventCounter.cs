using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Tests;

/// <summary>Counts the log entries of one event id, across every host it is added to, so a test can wait for them or assert they happened.</summary>
internal sealed class LogEventCounter(int eventId) : ILoggerProvider, ILogger
{
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public ILogger CreateLogger(string categoryName) => this;

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    public bool IsEnabled(LogLevel logLevel) => true;

    public void Log<TState>(LogLevel logLevel, EventId logged, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (logged.Id == eventId)
        {
            Interlocked.Increment(ref _count);
        }
    }

    public void Dispose()
    {
    }
}
