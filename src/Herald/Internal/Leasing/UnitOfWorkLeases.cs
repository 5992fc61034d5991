using System.Runtime.CompilerServices;
using Herald.Persistence;

namespace Herald.Internal;

/// <summary>
/// Ties a unit of work to the leases its writes rely on (a store outside its transaction, such as the Redis inbox's
/// pending mark): the pipeline cancels the attempt's handlers when a lease is found lost, and confirms every lease just
/// before the commit, refusing the commit (<see cref="LeaseLostException"/>) when one is gone, so the work is not applied
/// beside another holder's.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class UnitOfWorkLeases
{
    private static readonly ConditionalWeakTable<IUnitOfWork, List<LeaseRenewal>> Leases = new();

    /// <summary>Makes <paramref name="unitOfWork"/>'s commit depend on <paramref name="lease"/> (renewed until the unit of work ends).</summary>
    public static void DependOn(IUnitOfWork unitOfWork, LeaseRenewal lease)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        ArgumentNullException.ThrowIfNull(lease);
        var leases = Leases.GetValue(unitOfWork, static _ => []);
        lock (leases)
        {
            leases.Add(lease);
        }
    }

    /// <summary>The leases the unit of work depends on, or null.</summary>
    internal static LeaseRenewal[]? Of(IUnitOfWork unitOfWork)
    {
        if (!Leases.TryGetValue(unitOfWork, out var leases))
        {
            return null;
        }

        lock (leases)
        {
            return leases.Count == 0 ? null : [.. leases];
        }
    }

    /// <summary>Throws <see cref="LeaseLostException"/> when a lease the unit of work depends on is lost (asked of the store now).</summary>
    internal static async ValueTask ConfirmAsync(IUnitOfWork unitOfWork, CancellationToken cancellationToken)
    {
        if (Of(unitOfWork) is not { } leases)
        {
            return;
        }

        foreach (var lease in leases)
        {
            if (!await lease.ConfirmAsync(cancellationToken).ConfigureAwait(false))
            {
                throw new LeaseLostException($"The {lease.Kind.Replace('_', ' ')} this attempt held was lost while its handlers ran; its work is rolled back rather than committed beside another holder's.");
            }
        }
    }
}
