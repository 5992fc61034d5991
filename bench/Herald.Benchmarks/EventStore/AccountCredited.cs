namespace Herald.Benchmarks.EventStore;

/// <summary>The event every contender stores: a few fields that serialize to about 150 bytes of JSON.</summary>
internal sealed record AccountCredited(Guid AccountId, decimal Amount, string Currency, string Reference, DateTimeOffset BookedAt)
{
    public static AccountCredited Next(int sequence) =>
        new(Guid.CreateVersion7(), 100 + (sequence % 1000), "EUR", $"invoice-{sequence:D8}-settlement", DateTimeOffset.UtcNow);
}
