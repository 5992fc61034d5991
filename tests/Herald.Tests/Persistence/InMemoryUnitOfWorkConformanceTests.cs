using System.Collections.Concurrent;
using Herald.Conformance.Persistence;
using Herald.Hosting;
using Herald.Persistence;

namespace Herald.Tests.Persistence;

/// <summary>The unit-of-work contract on the in-memory default (no persistence package).</summary>
public sealed class InMemoryUnitOfWorkConformanceTests : UnitOfWorkConformance
{
    // The application's "table" in memory: without a transaction, a row is written by a commit callback.
    private readonly ConcurrentDictionary<string, bool> _rows = new(StringComparer.Ordinal);

    protected override void UseEngine(HeraldBuilder herald)
    {
    }

    protected override ValueTask WriteUserRowAsync(IUnitOfWork unitOfWork, string key)
    {
        unitOfWork.OnCommitted(_ =>
        {
            _rows[key] = true;
            return ValueTask.CompletedTask;
        });
        return ValueTask.CompletedTask;
    }

    protected override ValueTask<bool> UserRowExistsAsync(IServiceProvider services, string key) => ValueTask.FromResult(_rows.ContainsKey(key));
}
