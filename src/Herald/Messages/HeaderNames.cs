namespace Herald.Messages;

/// <summary>Names of the headers Herald itself reads and writes.</summary>
public static class HeaderNames
{
    /// <summary>W3C trace context parent (CloudEvents distributed tracing extension).</summary>
    public const string TraceParent = "traceparent";

    /// <summary>W3C trace context state.</summary>
    public const string TraceState = "tracestate";

    /// <summary>The CloudEvents <c>source</c> of a message: the endpoint or service that produced it.</summary>
    public const string Source = "herald-source";

    /// <summary>Why a message was dead-lettered.</summary>
    public const string DeadLetterReason = "herald-dead-letter-reason";
}
