using Herald.Hosting;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Streams;
using Herald.Streams;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Keeps stream processors' state in the PostgreSQL schema of <c>UsePostgres</c>.</summary>
public static class PostgresStreamsHeraldBuilderExtensions
{
    /// <summary>
    /// Stores stream processors' state in the schema that <c>UsePostgres</c> uses (call that too), committed with their
    /// checkpoints in one transaction: a restart neither loses nor double-counts an event.
    /// </summary>
    public static HeraldBuilder UsePostgresStreamState(this HeraldBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.Replace(ServiceDescriptor.Singleton<IStreamStateStore>(sp => new PostgresStreamStateStore(sp.GetRequiredService<PostgresEventStore>())));
        return builder;
    }
}
