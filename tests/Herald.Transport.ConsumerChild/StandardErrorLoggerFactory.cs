using Microsoft.Extensions.Logging;

namespace Herald.Transport.ConsumerChild;

/// <summary>
/// Writes the transport's warnings and errors (a lease lost, a failed settlement or claim) to stderr, which the parent test
/// shows when it fails; stdout stays the protocol alone.
/// </summary>
internal sealed class StandardErrorLoggerFactory : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName) => new Logger(categoryName);

    public void AddProvider(ILoggerProvider provider)
    {
    }

    public void Dispose()
    {
    }

    private sealed class Logger(string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel))
            {
                Console.Error.WriteLine($"{logLevel} {category}[{eventId.Id}]: {formatter(state, exception)}{(exception is null ? "" : " " + exception)}");
            }
        }
    }
}
