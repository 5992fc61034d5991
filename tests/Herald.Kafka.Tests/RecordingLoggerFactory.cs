using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Tests;

/// <summary>Keeps each log entry's event id and text, and passes it on.</summary>
internal sealed class RecordingLoggerFactory(ILoggerFactory inner) : ILoggerFactory
{
    public ConcurrentQueue<(int Id, string Message)> Entries { get; } = new();

    public ILogger CreateLogger(string categoryName) => new Logger(this, inner.CreateLogger(categoryName));

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(RecordingLoggerFactory factory, ILogger inner) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            factory.Entries.Enqueue((eventId.Id, formatter(state, exception)));
            inner.Log(logLevel, eventId, state, exception, formatter);
        }
    }
}
