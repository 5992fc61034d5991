using Herald.Conformance;
using Herald.Persistence;
using Herald.Processes;
using Herald.Sagas;
using Herald.Sqlite.Tests.Reliability;
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
