namespace Herald.Reliability.DeadLetters;

/// <summary>The retry target of each origin (the last registered wins), and the refusal of a dead letter no target takes.</summary>
internal sealed class DeadLetterRetryTargets
{
    private readonly Dictionary<DeadLetterOrigin, IDeadLetterRetryTarget> _targets = [];

    public DeadLetterRetryTargets(IEnumerable<IDeadLetterRetryTarget> targets)
    {
        foreach (var target in targets)
        {
            _targets[target.Origin] = target;
        }
    }

    /// <summary>The target of <paramref name="deadLetter"/>'s origin.</summary>
    /// <exception cref="DeadLetterRetryRefusedException">Its origin is one this version does not know, or no target of it is registered.</exception>
    public IDeadLetterRetryTarget For(DeadLetter deadLetter)
    {
        if (!DeadLetterHeaders.TryGetOrigin(deadLetter.Envelope, out var origin))
        {
            throw new DeadLetterRetryRefusedException(
                $"Dead letter {deadLetter.Id} names an origin this version of Herald does not know ('{deadLetter.Envelope.GetHeader(Messages.HeaderNames.DeadLetterOrigin)}'); it is not retried and stays.");
        }

        return _targets.TryGetValue(origin, out var target) ? target : throw new DeadLetterRetryRefusedException(Refusal(deadLetter, origin));
    }

    private static string Refusal(DeadLetter deadLetter, DeadLetterOrigin origin) => origin switch
    {
        DeadLetterOrigin.Projection =>
            $"Dead letter {deadLetter.Id} came from projection '{deadLetter.Endpoint}', and no projection is registered on this host: retry it on a host that registers it (AddProjection). It stays.",
        DeadLetterOrigin.EventSubscription =>
            $"Dead letter {deadLetter.Id} came from event subscription '{deadLetter.Endpoint}', whose handler only the subscription has: it cannot be retried from the dead letters. It stays; handle its event by hand, then purge it.",
        DeadLetterOrigin.StreamProcessor =>
            $"Dead letter {deadLetter.Id} came from stream processor '{deadLetter.Endpoint}', whose state and windows have moved past its event: it cannot be retried from the dead letters. It stays; purge it once its cause is dealt with.",
        _ => $"Dead letter {deadLetter.Id} came from '{deadLetter.Endpoint}' ({origin}), which nothing on this host takes back. It stays.",
    };
}
