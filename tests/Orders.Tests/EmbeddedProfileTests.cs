namespace Orders.Tests;

/// <summary>The embedded profile: every store and the queue in one temporary SQLite file.</summary>
public sealed class EmbeddedServiceFixture : IAsyncLifetime
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "orders-tests-" + Guid.NewGuid().ToString("N")[..12]);

    public ServiceInstance Service { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        Service = await ServiceInstance.StartAsync("--Herald:Profile", "embedded", "--Herald:Sqlite", Path.Combine(_directory, "orders.db"));
    }

    public async Task DisposeAsync()
    {
        await Service.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }
}

public sealed class EmbeddedProfileTests(EmbeddedServiceFixture fixture) : OrderServiceSpecification, IClassFixture<EmbeddedServiceFixture>
{
    protected override ServiceInstance Service => fixture.Service;
}
