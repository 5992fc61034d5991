using System.Collections.Frozen;

namespace Herald.Reliability.Retry;

/// <summary>
/// How a failed message is retried (immutable; build one with <see cref="Create"/> or a <see cref="RetryPolicyBuilder"/>).
/// Attempts are counted over the whole life of a message, from 1: attempt 1 is the first delivery; the next
/// <see cref="ImmediateRetries"/> attempts re-run the handlers at once, in process, within that first delivery; each of
/// the next <see cref="DelayedRetries"/> attempts is a redelivery through the transport after a backoff delay. When
/// attempt <see cref="MaxAttempts"/> (= 1 + ImmediateRetries + DelayedRetries) fails, the message goes to the dead
/// letters. An exception of a <see cref="NeverRetried"/> type sends it there on the attempt that threw it.
/// </summary>
/// <remarks>
/// The delay before delayed retry <c>k</c> (1-based) is drawn uniformly ("full jitter") from
/// [<see cref="MinDelay"/>, min(<see cref="MaxDelay"/>, MinDelay × Factor^k)], so it never leaves the configured bounds and
/// concurrent failures spread out instead of retrying in lockstep. Redeliveries are counted by the transport
/// (<see cref="Messages.Envelope.DeliveryAttempt"/>), so scaled-out consumers do not multiply the attempts.
/// </remarks>
public sealed class RetryPolicy
{
    internal RetryPolicy(int immediateRetries, int delayedRetries, TimeSpan minDelay, TimeSpan maxDelay, double factor, IEnumerable<Type> neverRetried)
    {
        ImmediateRetries = immediateRetries;
        DelayedRetries = delayedRetries;
        MinDelay = minDelay;
        MaxDelay = maxDelay;
        Factor = factor;
        NeverRetried = neverRetried.ToFrozenSet();
    }

    /// <summary>
    /// The default: 2 immediate retries, then 3 delayed retries between 1 second and 1 minute (factor 4), so 6 attempts;
    /// undecodable messages, unknown types and validation failures are never retried.
    /// </summary>
    public static RetryPolicy Default { get; } = new RetryPolicyBuilder().Build();

    /// <summary>No retries: the first failure dead-letters the message.</summary>
    public static RetryPolicy None { get; } = new RetryPolicyBuilder().NoRetries().Build();

    /// <summary>Attempts re-run at once, in process, after the first attempt fails.</summary>
    public int ImmediateRetries { get; }

    /// <summary>Redeliveries through the transport, each after a backoff delay, once the immediate retries are spent.</summary>
    public int DelayedRetries { get; }

    /// <summary>Shortest delay before a redelivery.</summary>
    public TimeSpan MinDelay { get; }

    /// <summary>Longest delay before a redelivery.</summary>
    public TimeSpan MaxDelay { get; }

    /// <summary>Growth of the delay ceiling per delayed retry (1: no growth).</summary>
    public double Factor { get; }

    /// <summary>Exception types (and their subtypes) that are never retried: they go straight to the dead letters.</summary>
    public IReadOnlySet<Type> NeverRetried { get; }

    /// <summary>Every attempt a message gets before it is dead-lettered: 1 + <see cref="ImmediateRetries"/> + <see cref="DelayedRetries"/>.</summary>
    public int MaxAttempts => 1 + ImmediateRetries + DelayedRetries;

    /// <summary>Builds a policy from the defaults changed by <paramref name="configure"/>; throws <see cref="InvalidRetryPolicyException"/> when it is impossible.</summary>
    public static RetryPolicy Create(Action<RetryPolicyBuilder> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        var builder = new RetryPolicyBuilder();
        configure(builder);
        return builder.Build();
    }

    /// <summary>A builder holding this policy's settings, to derive a changed copy.</summary>
    public RetryPolicyBuilder ToBuilder() => new(this);

    /// <summary>
    /// True when the exception is of a never-retried type (or derives from one); a failed aggregate load, and a unit of work
    /// rolled back for a failure of work that joined it, go by their cause.
    /// </summary>
    public bool IsNeverRetried(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        if (exception is EventSourcing.Aggregates.AggregateLoadException or Persistence.UnitOfWorkDoomedException && exception.InnerException is { } cause)
        {
            // Each only adds where the failure happened: retried, or not, as its cause would be.
            return IsNeverRetried(cause);
        }

        for (var type = exception.GetType(); type is not null; type = type.BaseType)
        {
            if (NeverRetried.Contains(type))
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// Decides what follows the failure of attempt number <paramref name="attempt"/> (1-based, counted as described on
    /// the type); <paramref name="random"/> draws the jitter.
    /// </summary>
    public RetryDecision Decide(Exception exception, int attempt, Random random)
    {
        ArgumentNullException.ThrowIfNull(exception);
        ArgumentNullException.ThrowIfNull(random);
        ArgumentOutOfRangeException.ThrowIfLessThan(attempt, 1);
        if (IsNeverRetried(exception) || attempt >= MaxAttempts)
        {
            return RetryDecision.DeadLetter;
        }

        if (attempt <= ImmediateRetries)
        {
            return RetryDecision.RetryImmediately;
        }

        return RetryDecision.Redeliver(GetDelay(attempt - ImmediateRetries, random));
    }

    /// <summary>The largest delay delayed retry number <paramref name="delayedRetry"/> (1-based) can get: min(MaxDelay, MinDelay × Factor^k).</summary>
    public TimeSpan GetDelayCeiling(int delayedRetry)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(delayedRetry, 1);
        var ticks = MinDelay.Ticks * Math.Pow(Factor, delayedRetry);
        return ticks >= MaxDelay.Ticks || double.IsNaN(ticks) ? MaxDelay : TimeSpan.FromTicks((long)ticks);
    }

    /// <summary>Draws the delay of delayed retry number <paramref name="delayedRetry"/> (1-based) uniformly between <see cref="MinDelay"/> and its ceiling.</summary>
    public TimeSpan GetDelay(int delayedRetry, Random random)
    {
        ArgumentNullException.ThrowIfNull(random);
        var ceiling = GetDelayCeiling(delayedRetry);
        var spread = ceiling.Ticks - MinDelay.Ticks;
#pragma warning disable CA5394 // Jitter only spreads retries over time; it needs no cryptographic randomness.
        var jitter = spread <= 0 ? 0 : (long)(random.NextDouble() * spread);
#pragma warning restore CA5394
        return TimeSpan.FromTicks(MinDelay.Ticks + jitter);
    }

    /// <inheritdoc />
    public override string ToString() =>
        $"{ImmediateRetries} immediate + {DelayedRetries} delayed retries ({MinDelay}..{MaxDelay}, factor {Factor}); never retried: {string.Join(", ", NeverRetried.Select(t => t.Name).Order(StringComparer.Ordinal))}";
}
