namespace Herald.Reliability.DeadLetters;

/// <summary>
/// What kind of consumer a dead letter came from, which decides what a retry does with it (<see cref="DeadLetter.Endpoint"/>
/// names the consumer). Kept by name in the envelope's <see cref="Messages.HeaderNames.DeadLetterOrigin"/> header.
/// </summary>
public enum DeadLetterOrigin
{
    /// <summary>An endpoint's queue, or the destination that refused a send: a retry sends the message back there (or publishes it to its topic).</summary>
    Endpoint,

    /// <summary>An async projection: a retry applies the stored event to the projection again, in a unit of work of its read models.</summary>
    Projection,

    /// <summary>An event subscription with handlers of its own: a retry is refused (nothing but the subscription can take the event back).</summary>
    EventSubscription,

    /// <summary>A stream processor: a retry is refused (its state and windows have moved past the event).</summary>
    StreamProcessor,
}
