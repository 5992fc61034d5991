using Herald.Conformance;
using Herald.CrashChild;
using Herald.Persistence;
using Herald.Processes;
using Herald.Sagas;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Tests.Reliability;
using Herald.Sqlite.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Sqlite.Tests.Sagas;

/// <summary>
/// Issue 11: "a saga process killed with SIGKILL in the middle of a step resumes and finishes, with each step's effect
/// exactly once". The child (Herald.CrashChild saga-sqlite) runs step one, then is killed inside step two after that
/// step wrote its effect into its unit of work; a host started here on the same file resumes the instance.
/// </summary>
public sealed class SagaCrashTests : IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task SagaKilledInTheMiddleOfAStep_ResumesAtTheNextStart_AndEveryStepsEffectIsWrittenOnce()
    {
        using (var raw = _database.OpenRaw())
        {
            using var create = raw.CreateCommand();
            create.CommandText = "CREATE TABLE saga_effects (id INTEGER PRIMARY KEY, step TEXT NOT NULL)";
            create.ExecuteNonQuery();
        }

        using (var child = await CrashChildProcess.StartAsync("saga-sqlite", _database.Path))
        {
            Assert.NotEqual(0, await child.KillAsync());
        }

        // Step one committed with its progress; step two's effect died with its transaction.
        Assert.Equal(["one"], Effects());

        var definition = SagaDefinition.Create<CrashSagaData>("crash-saga", s => s
            .Step("one", Effect)
            .Step("two", Effect)
            .Step("three", Effect));
        using var host = await SqliteReliabilityHostTests.StartAsync(_database.Path, h => h
            .Configure(o => o.StartConsumer = false)
            // Another process may share the file, so only an instance without a save for StaleAfter is taken over.
            .ConfigureSagas(o =>
            {
                o.StaleAfter = TimeSpan.FromMilliseconds(200);
                o.ResumeInterval = TimeSpan.FromMilliseconds(100);
            })
            .AddSaga(definition));
        var store = host.Services.GetRequiredService<ISagaStore>();

        var ended = await Eventually.ValueAsync(
            async () => await store.LoadAsync("crash-saga", "saga-1") is { IsFinished: true } instance ? instance : null,
            "the resumed saga finishes");
        await host.StopAsync();

        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(["one", "two", "three"], ended.CompletedSteps);
        Assert.Equal(["one", "two", "three"], Effects());
    }

    [Fact]
    public async Task StateMachineKilledBetweenATransitionsCommitAndItsTimeoutsSend_WithoutAnOutbox_SendsTheTimeoutAgainAtTheNextStart()
    {
        // The child's transition committed holding a payment timeout whose send then died with the process: nothing ever
        // sent it, so the instance waited in AwaitingPayment for good. The saga sweep of the next start sends it again.
        using (var child = await CrashChildProcess.StartAsync("saga-timeout-sqlite", _database.Path))
        {
            Assert.NotEqual(0, await child.WaitForExitAsync());

            // Its "killing <id>" line: here the kill comes before the timeout's send, not after it.
            Assert.NotNull(child.KilledAfterSending);
        }

        using var host = await SqliteReliabilityHostTests.StartAsync(_database.Path, h => h
            .Configure(o => o.EndpointName = "crash-child")
            .UseTransport(sp => SqliteQueueTransportFactory.Open(sp.GetRequiredService<SqliteEventStore>()))
            .AddMessageType<CrashOrderPlaced>()
            .AddMessageType<CrashPaymentTimedOut>()
            .AddSaga(CrashOrders.Machine())
            .ConfigureSagas(o =>
            {
                o.StaleAfter = TimeSpan.FromSeconds(1);
                o.ResumeInterval = TimeSpan.FromMilliseconds(200);
            }));
        var store = host.Services.GetRequiredService<ISagaStore>();
        var waiting = await store.LoadAsync(CrashOrders.Name, "order-1");
        Assert.Equal("AwaitingPayment", waiting?.State);
        Assert.Single(waiting!.Timeouts);

        var ended = await Eventually.ValueAsync(
            async () => await store.LoadAsync(CrashOrders.Name, "order-1") is { IsFinished: true } instance ? instance : null,
            "the lost timeout is sent again and fires");
        await host.StopAsync();

        Assert.Equal("Expired", ended.State);
    }

    private static ValueTask Effect(SagaStepContext<CrashSagaData> context)
    {
        context.Services.GetRequiredService<IUnitOfWork>().EnlistSqliteWrite(connection =>
        {
            using var insert = connection.CreateCommand();
            insert.CommandText = "INSERT INTO saga_effects (step) VALUES ($step)";
            insert.Parameters.AddWithValue("$step", context.StepName);
            insert.ExecuteNonQuery();
        });
        return ValueTask.CompletedTask;
    }

    private List<string> Effects()
    {
        using var raw = _database.OpenRaw();
        using var select = raw.CreateCommand();
        select.CommandText = "SELECT step FROM saga_effects ORDER BY id";
        using var reader = select.ExecuteReader();
        var steps = new List<string>();
        while (reader.Read())
        {
            steps.Add(reader.GetString(0));
        }

        return steps;
    }

    private sealed class CrashSagaData
    {
        public string Note { get; set; } = "crash";
    }
}
