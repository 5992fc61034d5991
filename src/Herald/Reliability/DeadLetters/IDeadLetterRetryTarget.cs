namespace Herald.Reliability.DeadLetters;

/// <summary>
/// Where a retry takes the dead letters of one <see cref="DeadLetterOrigin"/>: the transport for an endpoint's, the
/// projection host for a projection's. Each registers itself in DI; <see cref="DeadLetterManager"/> refuses the dead letters
/// of an origin none registered, rather than send them to a queue nothing consumes.
/// </summary>
internal interface IDeadLetterRetryTarget
{
    /// <summary>The origin whose dead letters it takes back.</summary>
    DeadLetterOrigin Origin { get; }

    /// <summary>
    /// Takes the dead letter's message back; returns once that is done: true when it deleted the dead letter in the same unit
    /// of work, false when the manager is to delete it now. Throws when it failed (the dead letter stays), a
    /// <see cref="DeadLetterRetryRefusedException"/> when it cannot take this one, a <see cref="DeadLetterNotFoundException"/>
    /// when it found the dead letter gone at its commit (another retry took it; nothing was done).
    /// </summary>
    ValueTask<bool> RetryAsync(DeadLetter deadLetter, CancellationToken cancellationToken);
}

/// <summary>A retry that cannot be done at all (not a failure to be tried again as it is): the dead letter stays, with the reason.</summary>
internal sealed class DeadLetterRetryRefusedException(string message) : HeraldException(message);
