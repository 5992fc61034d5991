using Herald.EventSourcing;
using Herald.Postgres.EventSourcing;
using Npgsql;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>Racing appends never both succeed and are never silently dropped (Eventuous #553, Marten #2260).</summary>
public sealed class AppendRaceTests(PostgresSchemaFixture fixture) : IClassFixture<PostgresSchemaFixture>
{
    private const int Races = 50;

    [Fact]
    public async Task RacingAppendsFromTwoNodesWithTheSameExpectedVersion_ExactlyOneWinsEachRace()
    {
        await using var nodes = await TwoNodes.StartAsync(fixture);
        var (first, contenders) = (nodes.First, nodes.Contenders);

        for (var race = 0; race < Races; race++)
        {
            // Creating the stream: every contender expects no stream.
            var stream = TestEvents.NewStream();
            var created = await RaceAsync(contenders, stream, ExpectedVersion.NoStream, 2);
            AssertOneWinner(created, actualForLosers: 2);

            // Continuing it: every contender expects version 2.
            var continued = await RaceAsync(contenders, stream, ExpectedVersion.Exactly(2), 3);
            AssertOneWinner(continued, actualForLosers: 5);

            var stored = await TestEvents.ReadStreamAsync(first, stream);
            Assert.Equal(Enumerable.Range(1, 5).Select(v => (long)v), stored.Select(e => e.Version));
            Assert.Equal(created.Single(o => o.Won).Ids.Concat(continued.Single(o => o.Won).Ids), stored.Select(e => e.EventId));
        }
    }

    [Fact]
    public async Task RacingRetriesOfOneAppendToAnExistingStream_WriteItOnce_AndAllGetItsResult()
    {
        // The probe for stored ids runs after the stream's row is locked: a retry that waited for the lock sees the events
        // of the append it waited for (migration 11 probes in the statement that writes, after the locking UPDATE).
        await using var nodes = await TwoNodes.StartAsync(fixture);
        var (first, contenders) = (nodes.First, nodes.Contenders);

        for (var race = 0; race < Races; race++)
        {
            var stream = TestEvents.NewStream();
            await first.AppendAsync(stream, ExpectedVersion.NoStream, TestEvents.Many(1));
            var batch = TestEvents.Many(2);
            var results = await AllAtOnceAsync(contenders, store => store.AppendAsync(stream, ExpectedVersion.Any, batch).AsTask());

            Assert.Single(results.Distinct());
            Assert.Equal(3, results[0].StreamVersion);
            Assert.Equal([.. batch.Select(e => e.MessageId)], (await TestEvents.ReadStreamAsync(first, stream)).Skip(1).Select(e => e.EventId));
        }
    }

    private static Task<(bool Won, Guid[] Ids, long Actual)[]> RaceAsync(PostgresEventStore[] contenders, string stream, ExpectedVersion expected, int events) =>
        AllAtOnceAsync(contenders, async store =>
        {
            var batch = TestEvents.Many(events);
            try
            {
                await store.AppendAsync(stream, expected, batch);
                return (true, batch.Select(e => e.MessageId).ToArray(), 0L);
            }
            catch (ConcurrencyException ex)
            {
                return (false, batch.Select(e => e.MessageId).ToArray(), ex.Actual);
            }
        });

    // Runs the call for every contender on a thread of its own, all released at once.
    private static async Task<T[]> AllAtOnceAsync<T>(PostgresEventStore[] contenders, Func<PostgresEventStore, Task<T>> call)
    {
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var racing = contenders.Select(store => Task.Run(async () =>
        {
            await start.Task;
            return await call(store);
        })).ToList();
        start.SetResult();
        return await Task.WhenAll(racing);
    }

    private static void AssertOneWinner((bool Won, Guid[] Ids, long Actual)[] outcomes, long actualForLosers)
    {
        Assert.Single(outcomes, o => o.Won);
        Assert.All(outcomes.Where(o => !o.Won), o => Assert.Equal(actualForLosers, o.Actual));
    }

    /// <summary>Two stores on two data sources, as two nodes; each contends twice.</summary>
    private sealed class TwoNodes : IAsyncDisposable
    {
        private readonly NpgsqlDataSource _otherSource;
        private readonly PostgresEventStore _second;

        private TwoNodes(NpgsqlDataSource otherSource, PostgresEventStore first, PostgresEventStore second)
        {
            _otherSource = otherSource;
            _second = second;
            First = first;
            Contenders = [first, second, first, second];
        }

        public PostgresEventStore First { get; }

        public PostgresEventStore[] Contenders { get; }

        public static async Task<TwoNodes> StartAsync(PostgresSchemaFixture fixture)
        {
            var otherSource = NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString);
            var first = await PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema });
            var second = await PostgresEventStore.CreateAsync(otherSource, new PostgresStoreOptions { Schema = fixture.Schema });
            return new TwoNodes(otherSource, first, second);
        }

        public async ValueTask DisposeAsync()
        {
            await First.DisposeAsync();
            await _second.DisposeAsync();
            await _otherSource.DisposeAsync();
        }
    }
}
