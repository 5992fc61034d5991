using Herald.Sqlite.Transport;
using Herald.Conformance.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>
/// The whole transport suite on the SQLite queue, on real time. Each test gets its own file; a second transport the suite asks
/// for is a second instance on that file with its own writer, as another process would be (it learns of the first one's
/// sends only by polling).
/// </summary>
public sealed class SqliteQueueTransportConformanceTests(ITestOutputHelper output) : TransportConformance(output)
{
    private readonly TempDatabase _database = new();

    // Whole seconds are for brokers that round delays; a visible-at column is exact, so a shorter delay keeps the run short.
    protected override TimeSpan TestDelay => TimeSpan.FromSeconds(1);

    protected override async Task<ITransport> CreateTransportAsync() =>
        await SqliteQueueTransportFactory.OpenAsync(_database.Path, o =>
        {
            o.MaxMessageBytes = 64 * 1024;
            o.PollInterval = TimeSpan.FromMilliseconds(100);
        });

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        _database.Dispose();
    }
}
