using Herald.Postgres.Persistence;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Schema;

/// <summary>What the store needs to know of the schema once it is current.</summary>
/// <param name="Version">The schema version now in the database.</param>
/// <param name="PositionOffset">The per-database constant added to transaction ids in positions (ADR 0001).</param>
internal sealed record SchemaState(int Version, long PositionOffset);

/// <summary>
/// Creates the schema and applies missing migrations in order, in one transaction under an advisory lock, so nodes
/// starting together migrate once and never see half a schema.
/// </summary>
internal static class SchemaMigrator
{
    // SQL text here is constant except for the schema name, which PostgresIdentifier has validated.
    public static async Task<SchemaState> MigrateAsync(NpgsqlDataSource dataSource, string schema, ILogger logger, CancellationToken cancellationToken)
    {
        var quoted = Migrations.Quote(schema);
        await using var connection = await OpenAsync(dataSource, schema, cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);

        await LockAsync(connection, transaction, schema, cancellationToken).ConfigureAwait(false);

        // A current schema needs no DDL at all, so an application role without CREATE rights starts on a schema set up for it.
        bool schemaExists;
        bool versionTableExists;
        await using (var probe = new NpgsqlCommand("SELECT to_regnamespace($1) IS NOT NULL, to_regclass($2) IS NOT NULL", connection, transaction))
        {
            probe.Parameters.Add(new NpgsqlParameter<string> { TypedValue = quoted });
            probe.Parameters.Add(new NpgsqlParameter<string> { TypedValue = quoted + ".schema_version" });
            await using var reader = await probe.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            schemaExists = reader.GetBoolean(0);
            versionTableExists = reader.GetBoolean(1);
        }

        // Every recorded version, not just the highest: versions may have gaps (packages add theirs in parallel), and a
        // listed version not yet recorded is applied even when a higher one already is.
        var applied = new HashSet<int>();
        if (versionTableExists)
        {
            await using var command = new NpgsqlCommand($"SELECT version FROM {quoted}.schema_version", connection, transaction);
            await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
            while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
            {
                applied.Add(reader.GetInt32(0));
            }
        }

        var current = applied.Count == 0 ? 0 : applied.Max();
        var missing = Migrations.All.Where(m => !applied.Contains(m.Version)).ToList();

        if (current > Migrations.Latest)
        {
            throw new HeraldException(
                $"The PostgreSQL schema '{schema}' is at version {current}, but this Herald.Postgres only knows versions up to {Migrations.Latest}. " +
                "A newer Herald has migrated it; upgrade this application's Herald.Postgres package, or point it at another schema.");
        }

        if (!schemaExists)
        {
            await ExecuteAsync(connection, transaction, $"CREATE SCHEMA {quoted}", cancellationToken).ConfigureAwait(false);
        }

        if (!versionTableExists)
        {
            await ExecuteAsync(connection, transaction, $"""
                CREATE TABLE {quoted}.schema_version (
                    version int PRIMARY KEY,
                    description text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """, cancellationToken).ConfigureAwait(false);
        }

        foreach (var migration in missing)
        {
            await ExecuteAsync(connection, transaction, Migrations.Render(migration, schema), cancellationToken).ConfigureAwait(false);
            await using var record = new NpgsqlCommand($"INSERT INTO {quoted}.schema_version (version, description) VALUES ($1, $2)", connection, transaction);
            record.Parameters.Add(new NpgsqlParameter<int> { TypedValue = migration.Version });
            record.Parameters.Add(new NpgsqlParameter<string> { TypedValue = migration.Description });
            await record.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        long offset;
        await using (var command = new NpgsqlCommand($"SELECT position_offset FROM {quoted}.log_settings WHERE id = 1", connection, transaction))
        {
            offset = (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
        }

        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        if (missing.Count > 0)
        {
            Log.SchemaMigrated(logger, schema, current, Migrations.Latest);
        }

        return new SchemaState(Migrations.Latest, offset);
    }

    /// <summary>
    /// Makes the tables of <paramref name="version"/> again after they, or the whole schema, were dropped behind Herald's back:
    /// migrates (a schema dropped whole comes back whole), then creates whichever of that migration's tables and indexes are
    /// missing, under the migrations' lock. The version table still lists a dropped table's migration, so migrating alone
    /// would not make it again.
    /// </summary>
    public static async Task RecreateAsync(NpgsqlDataSource dataSource, string schema, int version, ILogger logger, CancellationToken cancellationToken)
    {
        await MigrateAsync(dataSource, schema, logger, cancellationToken).ConfigureAwait(false);
        await using var connection = await OpenAsync(dataSource, schema, cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await LockAsync(connection, transaction, schema, cancellationToken).ConfigureAwait(false);
        var migration = Migrations.All.Single(m => m.Version == version);
        await ExecuteAsync(connection, transaction, Migrations.RenderIfMissing(migration, schema), cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Takes the schema's migration lock until the transaction ends, so nodes migrating together take turns.</summary>
    private static async Task LockAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string schema, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand("SELECT pg_advisory_xact_lock($1)", connection, transaction);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = AdvisoryLockKey.ForMigrations(schema) });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Opens a connection, turning a failure to connect into an error that names the server.</summary>
    public static async Task<NpgsqlConnection> OpenAsync(NpgsqlDataSource dataSource, string schema, CancellationToken cancellationToken)
    {
        try
        {
            return await dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is NpgsqlException or TimeoutException or System.Net.Sockets.SocketException)
        {
            var settings = new NpgsqlConnectionStringBuilder(dataSource.ConnectionString);
            throw new HeraldException(
                $"Herald could not connect to PostgreSQL at {settings.Host}:{settings.Port} (database '{settings.Database}', user '{settings.Username}') " +
                $"to use schema '{schema}': {ex.Message}", ex);
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection, transaction);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }
}
