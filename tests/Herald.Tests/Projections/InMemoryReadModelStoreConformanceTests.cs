using Herald.Conformance.Projections;
using Herald.Persistence;
using Herald.Projections;

namespace Herald.Tests.Projections;

public sealed class InMemoryReadModelStoreConformanceTests : ReadModelStoreConformance
{
    private readonly InMemoryReadModelStore _store = new();

    protected override ValueTask<IReadModelStore> CreateStoreAsync() => new(_store);

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IReadModelStore store) => new(new InMemoryUnitOfWork());
}
