using Herald.Postgres.EventSourcing;
using Herald.Postgres.Schema;
using Herald.Conformance;
using Npgsql;

namespace Herald.Postgres.Tests.Schema;

public sealed class SchemaMigrationTests
{
    [Fact]
    public async Task Start_CreatesTheSchemaOnce_AndStartingAgainChangesNothing()
    {
        await using var schema = new TemporarySchema();
        var options = new PostgresStoreOptions { Schema = schema.Name };
        var stream = $"order-{Guid.NewGuid():N}";

        await using (var first = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options))
        {
            await first.AppendAsync(stream, Herald.EventSourcing.ExpectedVersion.NoStream, [TestEvents.New()]);
        }

        Assert.Equal(AllVersions, await VersionsAsync(schema.Name));
        await using var again = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options);

        Assert.Equal(AllVersions, await VersionsAsync(schema.Name));
        Assert.Equal(
            ["checkpoints", "dead_letter_counts", "dead_letters", "events", "idempotency", "inbox", "log_settings", "outbox", "queue_bindings", "queue_dead_letters", "queue_messages", "read_models", "sagas", "schema_version", "snapshots", "streams"],
            await TablesAsync(schema.Name));
        Assert.Equal(1, await again.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task Start_OnASchemaAtVersion7_UpgradesTheEventsTableSettings()
    {
        // Issue 16: version 8 sets storage parameters on the events table and its primary key of an existing database.
        await using var schema = new TemporarySchema();
        var options = new PostgresStoreOptions { Schema = schema.Name };
        var s = $"\"{schema.Name}\"";
        await using (await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options))
        {
        }

        Assert.Equal("{autovacuum_analyze_scale_factor=0.5}", await ReloptionsAsync(schema.Name, "events"));
        Assert.Equal("{fillfactor=100}", await ReloptionsAsync(schema.Name, "events_pkey"));
        await PostgresTestDatabase.ExecuteAsync($"""
            ALTER TABLE {s}.events RESET (autovacuum_analyze_scale_factor);
            ALTER INDEX {s}.events_pkey RESET (fillfactor);
            DELETE FROM {s}.schema_version WHERE version = 8;
            """);
        Assert.Equal("", await ReloptionsAsync(schema.Name, "events"));

        await using (await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options))
        {
        }

        Assert.Equal(AllVersions, await VersionsAsync(schema.Name));
        Assert.Equal("{autovacuum_analyze_scale_factor=0.5}", await ReloptionsAsync(schema.Name, "events"));
        Assert.Equal("{fillfactor=100}", await ReloptionsAsync(schema.Name, "events_pkey"));
    }

    [Fact]
    public async Task Start_OnASchemaAtVersion10_ReplacesTheAppendFunction_AndAppendsGoOn()
    {
        // Issue 9: version 11 replaces migration 9's append function of an existing database (same signature).
        await using var schema = new TemporarySchema();
        var options = new PostgresStoreOptions { Schema = schema.Name };
        var stream = $"order-{Guid.NewGuid():N}";
        await using (var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options))
        {
            await store.AppendAsync(stream, Herald.EventSourcing.ExpectedVersion.NoStream, [TestEvents.New()]);
        }

        await PostgresTestDatabase.ExecuteAsync(Migrations.Render(Migrations.All.Single(m => m.Version == 9), schema.Name));
        await PostgresTestDatabase.ExecuteAsync($"DELETE FROM \"{schema.Name}\".schema_version WHERE version = 11");
        Assert.False(await AppendFunctionHasTheShortPathAsync(schema.Name));

        await using (var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options))
        {
            Assert.Equal(AllVersions, await VersionsAsync(schema.Name));
            Assert.True(await AppendFunctionHasTheShortPathAsync(schema.Name));
            Assert.Equal(2, (await store.AppendAsync(stream, Herald.EventSourcing.ExpectedVersion.Exactly(1), [TestEvents.New()])).StreamVersion);
        }
    }

    private static Task<bool> AppendFunctionHasTheShortPathAsync(string schema) =>
        PostgresTestDatabase.ScalarAsync<bool>(
            $"SELECT prosrc LIKE '%v_fast%' FROM pg_proc WHERE oid = '\"{schema}\".append_events'::regproc");

    private static async Task<string> ReloptionsAsync(string schema, string relation)
    {
        var options = await PostgresTestDatabase.ScalarAsync<string>(
            $"SELECT coalesce(array_to_string(reloptions, ','), '') FROM pg_class WHERE oid = '\"{schema}\".{relation}'::regclass");
        return options.Length == 0 ? "" : "{" + options + "}";
    }

    [Fact]
    public async Task Start_AppliesAListedVersionBelowTheHighestRecorded_SoVersionGapsMergeCleanly()
    {
        await using var schema = new TemporarySchema();
        var options = new PostgresStoreOptions { Schema = schema.Name };
        await (await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options)).DisposeAsync();

        // As if version 1 had been added after a higher version was applied (two packages adding versions in parallel).
        await PostgresTestDatabase.ExecuteAsync($"""
            DROP TABLE "{schema.Name}".events, "{schema.Name}".streams, "{schema.Name}".checkpoints, "{schema.Name}".snapshots, "{schema.Name}".log_settings CASCADE;
            DROP FUNCTION "{schema.Name}".append_events;
            DROP FUNCTION "{schema.Name}".delete_stream;
            DELETE FROM "{schema.Name}".schema_version WHERE version = 1;
            """);
        await using var store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options);

        Assert.Equal(AllVersions, await VersionsAsync(schema.Name));
        var stream = $"order-{Guid.NewGuid():N}";
        await store.AppendAsync(stream, Herald.EventSourcing.ExpectedVersion.NoStream, [TestEvents.New()]);
        Assert.Equal(1, await store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task Start_OfFourNodesAtOnce_MigratesOnce()
    {
        await using var schema = new TemporarySchema();
        var sources = Enumerable.Range(0, 4).Select(_ => NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString)).ToList();
        try
        {
            var nodes = await Task.WhenAll(sources.Select(source => Task.Run(() => PostgresEventStore.CreateAsync(source, new PostgresStoreOptions { Schema = schema.Name }))));
            try
            {
                Assert.Equal(AllVersions, await VersionsAsync(schema.Name));
                var stream = $"order-{Guid.NewGuid():N}";
                await nodes[0].AppendAsync(stream, Herald.EventSourcing.ExpectedVersion.NoStream, [TestEvents.New()]);
                await nodes[3].AppendAsync(stream, Herald.EventSourcing.ExpectedVersion.Exactly(1), [TestEvents.New()]);
                Assert.Equal(2, await nodes[1].GetStreamVersionAsync(stream));
            }
            finally
            {
                foreach (var node in nodes)
                {
                    await node.DisposeAsync();
                }
            }
        }
        finally
        {
            foreach (var source in sources)
            {
                await source.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task Start_OnASchemaNewerThanThisCode_FailsNamingBothVersions()
    {
        await using var schema = new TemporarySchema();
        var options = new PostgresStoreOptions { Schema = schema.Name };
        await (await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options)).DisposeAsync();
        await PostgresTestDatabase.ExecuteAsync($"INSERT INTO \"{schema.Name}\".schema_version (version, description) VALUES (999, 'from the future')");

        var error = await Assert.ThrowsAsync<HeraldException>(() => PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options));

        Assert.Contains("version 999", error.Message, StringComparison.Ordinal);
        Assert.Contains($"up to {Migrations.Latest}", error.Message, StringComparison.Ordinal);
        Assert.Contains(schema.Name, error.Message, StringComparison.Ordinal);
        Assert.Equal([.. AllVersions, 999], await VersionsAsync(schema.Name));
    }

    [Fact]
    public async Task Start_WhenTheServerCannotBeReached_FailsNamingTheHost()
    {
        var unreachable = new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { Host = "127.0.0.1", Port = 1, Timeout = 5 }.ConnectionString;

        var error = await Assert.ThrowsAsync<HeraldException>(() => PostgresEventStore.CreateAsync(unreachable, new PostgresStoreOptions { Schema = PostgresTestDatabase.NewSchema() }));

        Assert.Contains("127.0.0.1:1", error.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<NpgsqlException>(error.InnerException);
    }

    [Fact]
    public async Task Start_OnACurrentSchema_NeedsNoRightToCreate()
    {
        await using var schema = new TemporarySchema();
        await (await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = schema.Name })).DisposeAsync();
        var role = "herald_app_" + Guid.NewGuid().ToString("N")[..8];
        await PostgresTestDatabase.ExecuteAsync($"""
            CREATE ROLE {role} LOGIN PASSWORD 'app';
            GRANT USAGE ON SCHEMA "{schema.Name}" TO {role};
            GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA "{schema.Name}" TO {role};
            GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "{schema.Name}" TO {role};
            """);
        try
        {
            var asApp = new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { Username = role, Password = "app" }.ConnectionString;
            await using var store = await PostgresEventStore.CreateAsync(asApp, new PostgresStoreOptions { Schema = schema.Name });

            var stream = $"order-{Guid.NewGuid():N}";
            await store.AppendAsync(stream, Herald.EventSourcing.ExpectedVersion.NoStream, [TestEvents.New()]);
            Assert.Equal(1, await store.GetStreamVersionAsync(stream));
        }
        finally
        {
            await PostgresTestDatabase.ExecuteAsync($"DROP OWNED BY {role}; DROP ROLE {role};");
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData("Herald")]
    [InlineData("herald\"; DROP SCHEMA public; --")]
    [InlineData("pg_herald")]
    [InlineData("1herald")]
    [InlineData("a_schema_name_that_is_far_too_long_for_a_channel_name")]
    public async Task Start_WithAnInvalidSchemaName_IsRefusedBeforeConnecting(string name)
    {
        var error = await Assert.ThrowsAsync<ArgumentException>(() => PostgresEventStore.CreateAsync("Host=127.0.0.1;Port=1", new PostgresStoreOptions { Schema = name }));

        Assert.Equal(nameof(PostgresStoreOptions.Schema), error.ParamName);
    }

    [Theory]
    [InlineData(-1)]
    [InlineData(1_001)]
    public async Task Start_WithAnAppendLingerOutOfRange_IsRefusedBeforeConnecting(int microseconds)
    {
        var options = new PostgresStoreOptions { AppendLinger = TimeSpan.FromMicroseconds(microseconds) };

        var error = await Assert.ThrowsAsync<ArgumentException>(() => PostgresEventStore.CreateAsync("Host=127.0.0.1;Port=1", options));

        Assert.Equal(nameof(PostgresStoreOptions.AppendLinger), error.ParamName);
        Assert.Contains("between 0 and 1 ms", error.Message, StringComparison.Ordinal);
    }

    private static List<int> AllVersions => [.. Migrations.All.Select(m => m.Version)];

    private static async Task<List<int>> VersionsAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"SELECT version FROM \"{schema}\".schema_version ORDER BY version", connection);
        var versions = new List<int>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            versions.Add(reader.GetInt32(0));
        }

        return versions;
    }

    private static async Task<List<string>> TablesAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name", connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = schema });
        var tables = new List<string>();
        await using var reader = await command.ExecuteReaderAsync();
        while (await reader.ReadAsync())
        {
            tables.Add(reader.GetString(0));
        }

        return tables;
    }
}
