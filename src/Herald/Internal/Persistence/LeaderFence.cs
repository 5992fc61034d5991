using Herald.EventSourcing;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Internal;

/// <summary>
/// Fences the writes of work that one owner does at a time (a projection's leader, a stream partition's owner), which a
/// lease cannot do alone: another node may hold the lease before this one notices it lost it (a killed session is seen at
/// the next keep-alive). The fence is a checkpoint-store key: each owner takes a term above every earlier one's when it
/// starts (the high 32 bits) and moves the key once more (the low ones) in every guarded unit of work, which the store does
/// only forward; so a guarded write of an owner another one supplanted conflicts, and writes nothing.
/// </summary>
public sealed class LeaderFence
{
    private readonly ICheckpointStore _checkpoints;
    private readonly UnitOfWorkRunner _runner;

    // Only the owner's one loop of guarded writes moves it.
    private long _value;

    private LeaderFence(ICheckpointStore checkpoints, UnitOfWorkRunner runner, string key, long term)
    {
        _checkpoints = checkpoints;
        _runner = runner;
        Key = key;
        _value = term;
    }

    /// <summary>The checkpoint-store key the fence is kept under.</summary>
    public string Key { get; }

    /// <summary>Takes a term under <paramref name="key"/> above every earlier owner's: call it before reading what the owner guards.</summary>
    public static async ValueTask<LeaderFence> TakeAsync(ICheckpointStore checkpoints, UnitOfWorkRunner runner, string key, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(checkpoints);
        ArgumentNullException.ThrowIfNull(runner);
        ArgumentException.ThrowIfNullOrEmpty(key);
        while (true)
        {
            var stored = await checkpoints.GetCheckpointAsync(key, cancellationToken).ConfigureAwait(false) ?? 0;
            var term = ((stored >> 32) + 1) << 32;
            if (await ForwardCheckpoint.TryAdvanceAsync(checkpoints, runner, key, term, cancellationToken).ConfigureAwait(false))
            {
                return new LeaderFence(checkpoints, runner, key, term);
            }

            // Another owner took a term meanwhile: take one above it.
        }
    }

    /// <summary>
    /// Runs <paramref name="work"/> in a unit of work that also moves the fence (first), so it commits only while no owner
    /// took a term after this one; otherwise throws <see cref="LeaseLostException"/> with <paramref name="lostMessage"/>
    /// and nothing of the work is written.
    /// </summary>
    public async ValueTask RunAsync(Func<IServiceProvider, CancellationToken, ValueTask> work, string lostMessage, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        try
        {
            await _runner.RunAsync(
                async (services, token) =>
                {
                    await _checkpoints.SetCheckpointAsync(Key, ++_value, services.GetRequiredService<IUnitOfWork>(), token).ConfigureAwait(false);
                    await work(services, token).ConfigureAwait(false);
                },
                cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (CheckpointConflictException conflict) when (conflict.SubscriptionId == Key)
        {
            throw new LeaseLostException(lostMessage);
        }
    }
}
