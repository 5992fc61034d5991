namespace Herald.Reliability.DeadLetters;

/// <summary>Why a message ended in the dead letters. Stores keep it by name.</summary>
public enum DeadLetterCause
{
    /// <summary>Every attempt of the retry policy failed.</summary>
    RetriesExhausted,

    /// <summary>The handler threw an exception of a never-retried type (such as a validation failure).</summary>
    NotRetryable,

    /// <summary>The envelope lacks a required field (an empty message id or message type, no time, a schema version below 1).</summary>
    InvalidEnvelope,

    /// <summary>No CLR type is registered for the envelope's message type.</summary>
    UnknownMessageType,

    /// <summary>The body could not be decoded into its message type.</summary>
    Undecodable,

    /// <summary>The type is known but the endpoint has no handler for it.</summary>
    NoHandler,

    /// <summary>The transport refused the message for good (for example too large), so the outbox could not send it.</summary>
    SendRejected,

    /// <summary>
    /// Found in the transport's own dead letters without Herald's record (dead-lettered there by other means); the drain
    /// moved it into the store with the reason the transport kept.
    /// </summary>
    TransportDeadLettered,

    /// <summary>The delivered body is larger than the endpoint's receive limit (<c>HeraldOptions.MaxReceivedMessageBytes</c>).</summary>
    TooLarge,
}
