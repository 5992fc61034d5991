using Herald.Hosting;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Streams;
using Herald.Streams;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Keeps stream processors' state in the SQLite file of <c>UseSqlite</c>.</summary>
public static class SqliteStreamsHeraldBuilderExtensions
{
    /// <summary>
    /// Stores stream processors' state in the SQLite file that <c>UseSqlite</c> opened (call that too), committed with their
    /// checkpoints in one transaction: a restart neither loses nor double-counts an event.
    /// </summary>
    public static HeraldBuilder UseSqliteStreamState(this HeraldBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Services.Replace(ServiceDescriptor.Singleton<IStreamStateStore>(sp => new SqliteStreamStateStore(sp.GetRequiredService<SqliteEventStore>())));
        return builder;
    }
}
