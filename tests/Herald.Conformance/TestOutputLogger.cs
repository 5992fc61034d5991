using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.Conformance;

/// <summary>
/// Keeps the log entries of a host at or above a level (at most <see cref="Capacity"/>), for a test to print with
/// <see cref="WriteTo"/> when it ends: what a component logged while a server was down shows why a run failed.
/// </summary>
public sealed class TestOutputLogger(LogLevel minimum = LogLevel.Warning) : ILoggerProvider
{
    /// <summary>The most entries kept; later ones are counted only.</summary>
    public const int Capacity = 400;

    private readonly LogLevel _minimum = minimum;
    private readonly ConcurrentQueue<string> _entries = new();
    private readonly DateTime _start = DateTime.UtcNow;
    private readonly ConcurrentBag<(string Text, TaskCompletionSource Seen)> _watches = [];
    private int _dropped;

    /// <summary>Completes when an entry containing <paramref name="text"/> is logged from now on: a signal that a component met the fault.</summary>
    public Task WhenLoggedAsync(string text)
    {
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _watches.Add((text, seen));
        return seen.Task;
    }

    /// <summary>Writes the kept entries (and how many were dropped) to the test's output.</summary>
    public void WriteTo(ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(output);
        foreach (var entry in _entries)
        {
            output.WriteLine(entry);
        }

        if (_dropped > 0)
        {
            output.WriteLine($"({_dropped} more log entries not kept)");
        }
    }

    /// <summary>The kept entries (and how many were dropped), one a line: for an assertion's message.</summary>
    public override string ToString() =>
        string.Join('\n', _entries) + (_dropped > 0 ? $"\n({_dropped} more log entries not kept)" : string.Empty);

    /// <inheritdoc />
    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);

    /// <inheritdoc />
    public void Dispose()
    {
    }

    private void Add(string entry)
    {
        foreach (var (text, seen) in _watches)
        {
            if (!seen.Task.IsCompleted && entry.Contains(text, StringComparison.Ordinal))
            {
                seen.TrySetResult();
            }
        }

        if (_entries.Count < Capacity)
        {
            _entries.Enqueue(entry);
        }
        else
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    private sealed class Logger(TestOutputLogger owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= owner._minimum;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }

            // The stack of an error shows which component failed; a warning's message is enough.
            var error = exception is null ? string.Empty
                : logLevel >= LogLevel.Error ? $" [{exception.GetType().Name}: {exception.Message}\n{string.Join('\n', exception.ToString().Split('\n').Where(l => l.Contains(" at Herald", StringComparison.Ordinal)).Take(12))}]"
                : $" [{exception.GetType().Name}: {exception.Message}]";
            owner.Add($"{DateTime.UtcNow - owner._start:mm\\:ss\\.fff} {logLevel} {category}: {formatter(state, exception)}{error}");
        }
    }
}
