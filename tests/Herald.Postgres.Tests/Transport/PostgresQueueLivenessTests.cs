using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Postgres.Tests.Transport;

/// <summary>The PostgreSQL queue against <see cref="LivenessConformance"/>, in a schema of its own.</summary>
public sealed class PostgresQueueLivenessTests : LivenessConformance, IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    protected override void UseTransport(HeraldBuilder herald) => herald.UsePostgresStoreAndQueue(_schema);
}
