namespace Herald.Postgres.Tests;

/// <summary>Schemas a test makes as it goes (one per store its hosts share), all dropped when it ends.</summary>
internal sealed class OwnedSchemas : IAsyncDisposable
{
    private readonly List<string> _schemas = [];

    public string New()
    {
        var schema = PostgresTestDatabase.NewSchema();
        _schemas.Add(schema);
        return schema;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var schema in _schemas)
        {
            await PostgresTestDatabase.DropSchemaAsync(schema);
        }
    }
}
