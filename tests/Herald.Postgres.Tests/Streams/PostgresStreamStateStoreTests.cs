using Herald.Postgres.Streams;
using Herald.Postgres.Tests.Reliability;
using Herald.Streams;

namespace Herald.Postgres.Tests.Streams;

/// <summary>Stream processors' state on a PostgreSQL schema shared by the class's tests (each uses a processor name of its own).</summary>
public sealed class PostgresStreamStateStoreTests(ReliabilitySchema schema) : IClassFixture<ReliabilitySchema>
{
    [Fact]
    public async Task Write_OfANameKeyOrValueHoldingU0000_IsRefusedNamingIt_AndReadingSuchAProcessorFindsNothing()
    {
        // PostgreSQL's text cannot hold it: the unit of work failed with a bare 22021, naming neither the processor nor the field.
        var store = new PostgresStreamStateStore(schema.Store);
        var processor = "processor-" + Guid.NewGuid().ToString("N");
        var unitOfWork = schema.Store.BeginUnitOfWork();

        var name = await Assert.ThrowsAsync<ArgumentException>(async () => await store.WriteAsync(processor + "\0", [new StateChange("counts", "k", "1")], unitOfWork));
        var key = await Assert.ThrowsAsync<ArgumentException>(async () => await store.WriteAsync(processor, [new StateChange("counts", "k", "1"), new StateChange("counts", "k\0", "1")], unitOfWork));
        var value = await Assert.ThrowsAsync<ArgumentException>(async () => await store.WriteAsync(processor, [new StateChange("counts", "k", "1\0")], unitOfWork));
        await unitOfWork.CommitAsync();

        Assert.Equal("processor", name.ParamName);
        Assert.Contains($"stream processor name '{processor}\\u0000' holds the character U+0000", name.Message, StringComparison.Ordinal);
        Assert.Contains($"state key 'k\\u0000' of stream processor '{processor}'", key.Message, StringComparison.Ordinal);
        Assert.Contains("state value '1\\u0000'", value.Message, StringComparison.Ordinal);
        Assert.Empty(await store.ReadAllAsync(processor + "\0").ToListAsync());
        Assert.Empty(await store.ReadAllAsync(processor).ToListAsync());
    }
}
