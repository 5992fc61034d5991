using Herald.Conformance.Sagas;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Postgres.Tests.Sagas;

/// <summary>State-machine sagas on PostgreSQL: each test gets a schema of its own, shared by its hosts and dropped at the end.</summary>
public sealed class PostgresSagaStateMachineConformanceTests : SagaStateMachineConformance, IAsyncLifetime
{
    private readonly List<string> _schemas = [];

    protected override string NewStore()
    {
        var schema = PostgresTestDatabase.NewSchema();
        _schemas.Add(schema);
        return schema;
    }

    protected override void UseStore(HeraldBuilder herald, string store) => herald.UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = store);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var schema in _schemas)
        {
            await PostgresTestDatabase.DropSchemaAsync(schema);
        }
    }
}
