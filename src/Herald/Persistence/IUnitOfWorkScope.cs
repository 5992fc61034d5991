using Herald.EventSourcing.Aggregates;

namespace Herald.Persistence;

/// <summary>
/// The scope a <see cref="UnitOfWorkRunner"/> (or the message pipeline) opened: its services, its unit of work and the
/// metadata of what caused it. It is ambient while the work runs, so a command sent from a handler joins the handler's unit
/// of work, and the scoped unit of work knows the scope that will commit it.
/// </summary>
internal interface IUnitOfWorkScope
{
    /// <summary>The services of the scope.</summary>
    IServiceProvider Services { get; }

    /// <summary>The metadata stamped on the events stored in this unit of work (correlation, causation, user).</summary>
    EventMetadata Metadata { get; }

    /// <summary>True when <paramref name="unitOfWork"/> is the one this scope commits.</summary>
    bool Owns(IUnitOfWork unitOfWork);

    /// <summary>Called when the scope's services create its unit of work, so the scope commits it.</summary>
    void Adopt(IServiceProvider services, IUnitOfWork unitOfWork);
}
