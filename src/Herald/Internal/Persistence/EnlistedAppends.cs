using Herald.EventSourcing;

namespace Herald.Internal;

/// <summary>
/// For an event store that writes a unit of work's appends only at its commit: the stream version an enlisted append
/// promises its caller, and the conflict when the commit would store it elsewhere, the same for every such store.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class EnlistedAppends
{
    /// <summary>
    /// The version the append leaves the stream at: from the expected version alone when it pins it, else (a NoStream append
    /// of events) from <paramref name="readStream"/>, which gets the stream's last version, deleted ones included, and where
    /// the first event id is already stored (a retry), or null. Null for Any and StreamExists, placed only at the commit.
    /// </summary>
    public static async ValueTask<long?> PlanAsync(ExpectedVersion expected, int count, Func<ValueTask<(long LastVersion, long? FirstIdStoredAt)>> readStream)
    {
        ArgumentNullException.ThrowIfNull(readStream);
        if (expected.IsExact)
        {
            return expected.Value + count;
        }

        if (!expected.IsNoStream)
        {
            return null;
        }

        if (count == 0)
        {
            return 0;
        }

        // After a deletion the stream starts again above its deleted versions; a retry keeps its stored place.
        var (last, storedAt) = await readStream().ConfigureAwait(false);
        return storedAt is { } start ? start + count - 1 : last + count;
    }

    /// <summary>
    /// Throws <see cref="ConcurrencyException"/> when the commit would leave the stream at <paramref name="version"/> though
    /// the append promised <paramref name="promised"/> (a NoStream append whose stream was started again and deleted since):
    /// its caller's next expected version, and any snapshot, would be wrong.
    /// </summary>
    public static void ThrowUnlessAsPromised(string stream, ExpectedVersion expected, long current, long version, long? promised)
    {
        if (promised is { } promise && promise != version)
        {
            throw new ConcurrencyException(stream, expected, current,
                $"The stream changed after the append was enlisted: its events would be stored up to version {version}, not {promise}.");
        }
    }
}
