using System.Collections.Concurrent;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Herald.Conformance;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Reliability;

/// <summary>
/// A started host for failure-injection tests: a unique endpoint, the in-memory transport behind a
/// <see cref="RecordingTransport"/>, a <see cref="FakeTimeProvider"/> that drives every delay, and captured logs.
/// </summary>
internal sealed class ReliabilityHost : IAsyncDisposable
{
    private ReliabilityHost(IHost host, FakeTimeProvider clock, RecordingTransport transport, LogCollector logs, string endpoint)
    {
        Host = host;
        Clock = clock;
        Transport = transport;
        Logs = logs;
        Endpoint = endpoint;
    }

    public IHost Host { get; }

    public FakeTimeProvider Clock { get; }

    public RecordingTransport Transport { get; }

    public InMemoryTransport InMemory => (InMemoryTransport)Transport.Inner;

    public LogCollector Logs { get; }

    public string Endpoint { get; }

    public IDeadLetterStore DeadLetters => Get<IDeadLetterStore>();

    public static async Task<ReliabilityHost> StartAsync(Action<HeraldBuilder> configure, Action<IServiceCollection>? services = null, int concurrency = 2)
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero));
        var endpoint = "rel-" + Guid.NewGuid().ToString("N")[..12];
        var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, clock));
        var logs = new LogCollector();
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders().AddProvider(logs).SetMinimumLevel(LogLevel.Debug);
        builder.Services.AddSingleton<TimeProvider>(clock);
        builder.Services.AddHerald(h =>
        {
            h.UseTransport(_ => transport);
            h.Configure(o =>
            {
                o.EndpointName = endpoint;
                o.MaxConcurrency = concurrency;
            });
            configure(h);
        });
        services?.Invoke(builder.Services);
        var host = builder.Build();
        await host.StartAsync();
        return new ReliabilityHost(host, clock, transport, logs, endpoint);
    }

    public T Get<T>()
        where T : notnull => Host.Services.GetRequiredService<T>();

    /// <summary>Polls until the condition holds, moving the fake clock forward by <paramref name="step"/> between looks (so delays elapse).</summary>
    public Task RunUntilAsync(Func<bool> condition, string description, TimeSpan step) =>
        Eventually.UntilAsync(
            () =>
            {
                if (condition())
                {
                    return true;
                }

                Clock.Advance(step);
                return false;
            },
            description);

    /// <summary>Polls until the endpoint has at least <paramref name="count"/> dead letters, moving the clock by <paramref name="step"/>.</summary>
    public async Task<IReadOnlyList<DeadLetter>> WaitForDeadLettersAsync(int count = 1, TimeSpan? step = null)
    {
        IReadOnlyList<DeadLetter> found = [];
        await Eventually.UntilAsync(
            async () =>
            {
                found = await DeadLetters.ListAsync(new DeadLetterQuery { Endpoint = Endpoint });
                if (found.Count >= count)
                {
                    return true;
                }

                Clock.Advance(step ?? TimeSpan.Zero);
                return false;
            },
            $"{count} dead letter(s) are stored for '{Endpoint}'");
        return found;
    }

    public async ValueTask DisposeAsync()
    {
        await Host.StopAsync();
        Host.Dispose();
    }
}

/// <summary>Collects log entries in memory.</summary>
internal sealed class LogCollector : ILoggerProvider
{
    private readonly ConcurrentQueue<LogEntry> _entries = new();

    public IReadOnlyList<LogEntry> Entries => [.. _entries];

    public ILogger CreateLogger(string categoryName) => new Collector(categoryName, _entries);

    public void Dispose()
    {
    }

    private sealed class Collector(string category, ConcurrentQueue<LogEntry> entries) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            entries.Enqueue(new LogEntry(category, logLevel, eventId.Id, formatter(state, exception), exception));
    }
}

internal sealed record LogEntry(string Category, LogLevel Level, int EventId, string Message, Exception? Exception);
