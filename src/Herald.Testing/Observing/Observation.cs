using Herald.Messages;

namespace Herald.Testing.Observing;

/// <summary>One thing the harness saw happen to a message: its envelope, the message decoded from it, and when (on the fake clock).</summary>
public abstract class Observation
{
    private protected Observation(Envelope envelope, object? message, DateTimeOffset time)
    {
        Envelope = envelope;
        Message = message;
        Time = time;
    }

    /// <summary>The envelope as it travelled.</summary>
    public Envelope Envelope { get; }

    /// <summary>The message decoded from the envelope; null when its type is not registered or its body does not decode.</summary>
    public object? Message { get; }

    /// <summary>When it was observed, on the harness's fake clock.</summary>
    public DateTimeOffset Time { get; }

    /// <summary>The message as <typeparamref name="TMessage"/>; throws when it is another type (or did not decode).</summary>
    /// <exception cref="HarnessAssertionException">The message is not a <typeparamref name="TMessage"/>.</exception>
    public TMessage As<TMessage>() =>
        Message is TMessage typed
            ? typed
            : throw new HarnessAssertionException($"Expected a {typeof(TMessage).Name}, but the message is {this}.");

    /// <summary>The message's type and id (and, in subclasses, what happened to it), as failure messages show it.</summary>
    public override string ToString() => $"{Message?.GetType().Name ?? Envelope.MessageType} {Envelope.MessageId}";
}

/// <summary>A message sent to a queue or published to a topic through the transport (by the bus, a handler or the outbox relay).</summary>
public sealed class SentMessage : Observation
{
    internal SentMessage(string destination, bool published, Envelope envelope, object? message, DateTimeOffset time)
        : base(envelope, message, time)
    {
        Destination = destination;
        IsPublished = published;
    }

    /// <summary>The queue it was sent to, or the topic it was published to.</summary>
    public string Destination { get; }

    /// <summary>True when it was published to a topic, false when it was sent to a queue.</summary>
    public bool IsPublished { get; }

    /// <inheritdoc />
    public override string ToString() => $"{base.ToString()} to '{Destination}'";
}

/// <summary>How a delivery of a message to an endpoint ended.</summary>
public enum HandlingOutcome
{
    /// <summary>The handlers ran and their unit of work committed; the delivery was acked.</summary>
    Succeeded = 0,

    /// <summary>Acked without running a handler (a duplicate the inbox knew).</summary>
    Skipped = 1,

    /// <summary>The handlers failed and the message will be delivered again (after <see cref="HandledMessage.RedeliveryDelay"/>).</summary>
    Retrying = 2,

    /// <summary>The message went to the dead letters (failures exhausted its retries, or it could not be handled at all).</summary>
    DeadLettered = 3,
}

/// <summary>One delivery of a message to an endpoint of the harness's host, and how it ended.</summary>
public sealed class HandledMessage : Observation
{
    internal HandledMessage(string endpoint, HandlingOutcome outcome, IReadOnlyList<Exception> failures, TimeSpan? redeliveryDelay, string? deadLetterReason, Envelope envelope, object? message, DateTimeOffset time)
        : base(envelope, message, time)
    {
        Endpoint = endpoint;
        Outcome = outcome;
        Failures = failures;
        RedeliveryDelay = redeliveryDelay;
        DeadLetterReason = deadLetterReason;
    }

    /// <summary>The endpoint (queue) that consumed it.</summary>
    public string Endpoint { get; }

    /// <summary>How the delivery ended.</summary>
    public HandlingOutcome Outcome { get; }

    /// <summary>What the handlers threw in this delivery, one per failed attempt (immediate retries included), oldest first.</summary>
    public IReadOnlyList<Exception> Failures { get; }

    /// <summary>When <see cref="Outcome"/> is <see cref="HandlingOutcome.Retrying"/>: how long until it is delivered again.</summary>
    public TimeSpan? RedeliveryDelay { get; }

    /// <summary>Which delivery of the message this was, from 1.</summary>
    public int DeliveryAttempt => Envelope.DeliveryAttempt;

    /// <summary>True when the handlers did not get through it: it will be delivered again, or it was dead-lettered.</summary>
    internal bool Failed => Outcome is HandlingOutcome.Retrying or HandlingOutcome.DeadLettered;

    /// <summary>What the handlers threw last, if they threw.</summary>
    internal Exception? LastFailure => Failures.Count > 0 ? Failures[^1] : null;

    /// <summary>When dead-lettered: why (<c>Undecodable: ...</c>), also for a message no handler ran for.</summary>
    internal string? DeadLetterReason { get; }

    /// <inheritdoc />
    public override string ToString() =>
        $"{base.ToString()} at '{Endpoint}': {Outcome}" + (LastFailure is { } failure
            ? $" ({failure.GetType().Name}: {failure.Message})"
            : DeadLetterReason is { } reason ? $" ({reason})" : string.Empty);
}

/// <summary>A message that reached the dead-letter store, with the record the store keeps (cause, error, attempts).</summary>
public sealed class DeadLetteredMessage : Observation
{
    internal DeadLetteredMessage(Herald.Reliability.DeadLetters.DeadLetter deadLetter, object? message, DateTimeOffset time)
        : base(deadLetter.Envelope, message, time)
    {
        DeadLetter = deadLetter;
    }

    /// <summary>The dead letter as stored.</summary>
    public Herald.Reliability.DeadLetters.DeadLetter DeadLetter { get; }

    /// <inheritdoc />
    public override string ToString() => $"{base.ToString()} from '{DeadLetter.Endpoint}': {DeadLetter.Cause} ({DeadLetter.ErrorMessage})";
}
