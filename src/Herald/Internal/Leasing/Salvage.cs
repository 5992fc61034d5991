namespace Herald.Internal;

/// <summary>
/// Reads what it can of a stored message that failed to decode, so the dead letter keeps its id, type and body where those
/// are intact: each part is read on its own, and a part that fails too takes its fallback.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class Salvage
{
    /// <summary>The value <paramref name="read"/> returns, or <paramref name="fallback"/> when it throws.</summary>
    public static T Read<T>(Func<T> read, T fallback)
    {
        ArgumentNullException.ThrowIfNull(read);
        try
        {
            return read();
        }
#pragma warning disable CA1031 // The message is already known to be broken; any failure here only loses one more part of it.
        catch (Exception)
#pragma warning restore CA1031
        {
            return fallback;
        }
    }
}
