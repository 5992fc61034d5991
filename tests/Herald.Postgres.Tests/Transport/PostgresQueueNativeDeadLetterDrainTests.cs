using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Postgres.Tests.Transport;

/// <summary>The PostgreSQL queue against <see cref="NativeDeadLetterDrainConformance"/>: its native dead letters are the queue_dead_letters table.</summary>
public sealed class PostgresQueueNativeDeadLetterDrainTests : NativeDeadLetterDrainConformance, IAsyncLifetime
{
    private readonly string _schema = PostgresTestDatabase.NewSchema();

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => PostgresTestDatabase.DropSchemaAsync(_schema);

    protected override void UseTransport(HeraldBuilder herald) => herald.UsePostgresStoreAndQueue(_schema);

    protected override Task<long> CountNativeDeadLettersAsync(string queue) =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{_schema}\".queue_dead_letters WHERE queue = '{queue}'");
}
