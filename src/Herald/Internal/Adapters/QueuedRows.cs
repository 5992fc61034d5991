using Herald.Messages;

namespace Herald.Internal;

/// <summary>The one rule of the SQL queues for a row a consumer claimed: it becomes a message, whatever it holds.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class QueuedRows
{
    /// <summary>
    /// The claimed row as a message; never throws: when <paramref name="read"/> cannot decode its envelope, the message is
    /// the envelope <paramref name="salvage"/> still makes of it with <paramref name="state"/> (see <see cref="Salvage"/>),
    /// carrying the failure, so the pipeline dead-letters it with the reason.
    /// </summary>
    /// <remarks>
    /// Runs for every claimed row: pass static lambdas and what the salvage needs as <paramref name="state"/>, so the common
    /// path allocates no closure.
    /// </remarks>
    public static QueuedMessage Read<TRow, TState>(TRow row, long id, int deliveryAttempt, TState state, Func<TRow, int, Envelope> read, Func<TRow, TState, Envelope> salvage)
    {
        ArgumentNullException.ThrowIfNull(read);
        ArgumentNullException.ThrowIfNull(salvage);
        try
        {
            return new QueuedMessage(id, read(row, deliveryAttempt));
        }
#pragma warning disable CA1031 // Whatever the row holds, the claim goes on; the failure travels with the message to the dead letters.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            return new QueuedMessage(id, salvage(row, state), ex);
        }
    }
}
