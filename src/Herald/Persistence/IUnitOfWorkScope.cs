using Herald.EventSourcing.Aggregates;
using Herald.Reliability.Outbox;

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

    /// <summary>
    /// The outbox that messages sent in this unit of work go through, so they leave only if it commits (a handler's
    /// <c>MessageContext</c> sends and the injected <c>IMessageBus</c> alike); null when they leave at once: no outbox, or
    /// handler messages not routed through it, or the scope has ended.
    /// </summary>
    IOutbox? GetOutbox();

    /// <summary>
    /// True once the scope's work is over (the handled message's attempt, the runner's work): nothing will commit a unit of
    /// work it creates any more, so work still running on its flow (a command a handler left running) must not join it.
    /// </summary>
    bool HasEnded { get; }

    /// <summary>True when <paramref name="unitOfWork"/> is the one this scope commits.</summary>
    bool Owns(IUnitOfWork unitOfWork);

    /// <summary>Called when the scope's services create its unit of work, so the scope commits it.</summary>
    void Adopt(IServiceProvider services, IUnitOfWork unitOfWork);

    /// <summary>The failure of work that joined this scope (a command sent from its handler) once one failed; its owner then rolls back.</summary>
    Exception? DoomedBy { get; }

    /// <summary>
    /// Marks the scope rollback-only: work that joined it failed, and its writes (already enlisted) cannot be told apart from
    /// the rest, so the owner must not commit even if the caller caught the failure. The first failure is kept.
    /// </summary>
    void Doom(Exception failure);
}
