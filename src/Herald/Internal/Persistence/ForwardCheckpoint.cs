using Herald.EventSourcing;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Internal;

/// <summary>Stores a checkpoint-store value only forward, in a unit of work of its own.</summary>
internal static class ForwardCheckpoint
{
    /// <summary>Stores <paramref name="value"/> under <paramref name="key"/>; false when the stored value is at or past it already.</summary>
    public static async ValueTask<bool> TryAdvanceAsync(ICheckpointStore checkpoints, UnitOfWorkRunner runner, string key, long value, CancellationToken cancellationToken)
    {
        try
        {
            await runner.RunAsync(
                (services, token) => checkpoints.SetCheckpointAsync(key, value, services.GetRequiredService<IUnitOfWork>(), token),
                cancellationToken: cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (CheckpointConflictException)
        {
            return false;
        }
    }
}
