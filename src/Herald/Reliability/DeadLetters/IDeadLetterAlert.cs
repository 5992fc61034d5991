namespace Herald.Reliability.DeadLetters;

/// <summary>
/// A hook called when an endpoint's dead letters reach the alert threshold (once per crossing; it re-arms when the count
/// falls to half the threshold or below). Register implementations with <c>h.AddDeadLetterAlert&lt;T&gt;()</c>; every one is called, and a
/// failing hook is logged without stopping the others.
/// </summary>
public interface IDeadLetterAlert
{
    /// <summary>Reacts to the alert (post to a chat, page someone...).</summary>
    ValueTask OnThresholdReachedAsync(DeadLetterThresholdReached alert, CancellationToken cancellationToken = default);
}

/// <summary>An endpoint's dead letters reached the alert threshold.</summary>
/// <param name="Endpoint">The endpoint.</param>
/// <param name="Count">How many dead letters it holds now.</param>
/// <param name="Threshold">The threshold that was reached.</param>
/// <param name="Time">When this was noticed.</param>
public sealed record DeadLetterThresholdReached(string Endpoint, long Count, int Threshold, DateTimeOffset Time);
