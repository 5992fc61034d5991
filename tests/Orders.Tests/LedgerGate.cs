using System.Collections.Concurrent;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Orders.Fulfilment;

namespace Orders.Tests;

/// <summary>
/// Holds a saga step of one request (by its correlation id) where it writes one of the services' tables, so a test can act
/// while fulfilment is under way: the step waits before its write, with the steps before it committed.
/// </summary>
public sealed class LedgerGate
{
    private readonly ConcurrentDictionary<(string Correlation, string Table), Hold> _holds = new();

    /// <summary>Holds the next write of <paramref name="correlationId"/>'s step into <paramref name="table"/> (payments, shipments, ...).</summary>
    public Hold HoldWrite(string correlationId, string table)
    {
        var hold = new Hold();
        _holds[(correlationId, table)] = hold;
        return hold;
    }

    /// <summary>Replaces the service's <see cref="Ledger"/> with one that passes through this gate.</summary>
    public void Install(IServiceCollection services)
    {
        var registered = services.Last(d => d.ServiceType == typeof(Ledger));
        services.Remove(registered);
        services.AddSingleton<Ledger>(sp => new GatedLedger(
            (Ledger)(registered.ImplementationInstance ?? registered.ImplementationFactory!(sp)),
            this));
    }

    private ValueTask WaitAsync(string sql, IReadOnlyDictionary<string, object?> parameters)
    {
        if (parameters.TryGetValue("correlation", out var correlation) && correlation is string id && !_holds.IsEmpty)
        {
            foreach (var ((held, table), hold) in _holds)
            {
                if (held == id && sql.StartsWith("INSERT INTO {prefix}" + table + " ", StringComparison.Ordinal) && _holds.TryRemove((held, table), out _))
                {
                    return new ValueTask(hold.ReachedAsync());
                }
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>One held write: <see cref="Reached"/> completes when the step gets there, <see cref="Release"/> lets it go on.</summary>
    public sealed class Hold
    {
        private readonly TaskCompletionSource _reached = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Task Reached => _reached.Task;

        public void Release() => _released.TrySetResult();

        internal Task ReachedAsync()
        {
            _reached.TrySetResult();
            return _released.Task;
        }
    }

    private sealed class GatedLedger : Ledger
    {
        private readonly Ledger _inner;
        private readonly LedgerGate _gate;

        public GatedLedger(Ledger inner, LedgerGate gate)
        {
            _inner = inner;
            _gate = gate;
            Instance = inner.Instance;
        }

        public override Task EnsureSchemaAsync(CancellationToken cancellationToken) => _inner.EnsureSchemaAsync(cancellationToken);

        public override async ValueTask ExecuteAsync(IUnitOfWork unitOfWork, string sql, IReadOnlyDictionary<string, object?> parameters, CancellationToken cancellationToken)
        {
            await _gate.WaitAsync(sql, parameters);
            await _inner.ExecuteAsync(unitOfWork, sql, parameters, cancellationToken);
        }

        public override Task<LedgerCounts> CountAsync(Guid? orderId, CancellationToken cancellationToken) => _inner.CountAsync(orderId, cancellationToken);

        public override Task<IReadOnlyDictionary<string, long>> PaymentsByInstanceAsync(CancellationToken cancellationToken) => _inner.PaymentsByInstanceAsync(cancellationToken);
    }
}
