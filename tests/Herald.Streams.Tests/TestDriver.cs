using Herald.Persistence;
using Herald.Streams;
using Herald.Streams.Topology;

namespace Herald.Streams.Tests;

/// <summary>Runs a topology in one task with explicit event times, writing sink outputs after every input (no I/O).</summary>
internal sealed class TestDriver
{
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 12, 0, 0, TimeSpan.Zero);

    private readonly Dictionary<(string Store, string Key), string> _committed = [];
    private readonly TimeSpan _outOfOrder;

    public TestDriver(StreamTopology topology, TimeSpan? outOfOrder = null)
    {
        _outOfOrder = outOfOrder ?? TimeSpan.Zero;
        Task = new StreamTask(topology, _outOfOrder);
    }

    public StreamTask Task { get; private set; }

    /// <summary>The state as the last <see cref="Commit"/> left it, entry by entry (JSON), as a durable store keeps it.</summary>
    public IReadOnlyDictionary<(string Store, string Key), string> Committed => _committed;

    public List<LateRecord> Late { get; } = [];

    public static DateTimeOffset At(double minutes) => T0.AddMinutes(minutes);

    public TestDriver Send<T>(string key, T value, double minutes) => Send(key, value, At(minutes));

    public TestDriver Send<T>(string key, T value, DateTimeOffset time)
    {
        Task.Process(value!, key, time);
        Flush();
        return this;
    }

    /// <summary>Writes the task's state changes since the last commit to <see cref="Committed"/>, as a processor's commit does.</summary>
    public void Commit()
    {
        foreach (var change in Task.TakeChanges())
        {
            if (change.Value is null)
            {
                _committed.Remove((change.Store, change.Key));
            }
            else
            {
                _committed[(change.Store, change.Key)] = change.Value;
            }
        }
    }

    /// <summary>A crash and restart: what was not committed is lost, and a new task loads the committed state, as a processor starts.</summary>
    public void Restart()
    {
        Task = new StreamTask(Task.Topology, _outOfOrder);
        foreach (var ((store, key), json) in _committed)
        {
            Task.Load(store, key, json);
        }
    }

    public void Flush()
    {
        var context = new StreamSinkContext("test", EmptyServices.Instance, new NoUnitOfWork());
        foreach (var group in Task.TakeOutputs().GroupBy(o => o.Sink))
        {
            group.Key.Writer.WriteAsync([.. group.Select(o => o.Record)], context, CancellationToken.None).AsTask().GetAwaiter().GetResult();
        }

        Late.AddRange(Task.TakeLate() ?? []);
    }

    private sealed class EmptyServices : IServiceProvider
    {
        public static readonly EmptyServices Instance = new();

        public object? GetService(Type serviceType) => null;
    }

    private sealed class NoUnitOfWork : IUnitOfWork
    {
        public bool IsCompleted => false;

        public void OnCommitted(Func<CancellationToken, ValueTask> callback)
        {
        }

        public void OnRolledBack(Func<CancellationToken, ValueTask> callback)
        {
        }

        public ValueTask CommitAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public ValueTask RollbackAsync(CancellationToken cancellationToken = default) => ValueTask.CompletedTask;
    }
}

internal static class Collect
{
    /// <summary>A sink that appends every output to <paramref name="into"/>.</summary>
    public static IStreamSink<TKey, TValue> Into<TKey, TValue>(List<StreamOutput<TKey, TValue>> into) => StreamSinks.Callback<TKey, TValue>(into.Add);
}

public sealed record Order(string OrderId, string ProductId, decimal Amount, DateTimeOffset PlacedAt);

public sealed record Payment(string OrderId, decimal Amount, DateTimeOffset PaidAt);

public sealed record Click(string User, string Page);
