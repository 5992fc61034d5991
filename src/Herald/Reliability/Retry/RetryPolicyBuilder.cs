using System.Globalization;
using Herald.Cqrs.Validation;
using Herald.Messages;

namespace Herald.Reliability.Retry;

/// <summary>Configures a <see cref="RetryPolicy"/>: starts from <see cref="RetryPolicy.Default"/>'s settings; <see cref="Build()"/> validates.</summary>
public sealed class RetryPolicyBuilder
{
    /// <summary>Most immediate retries accepted; more would hold a delivery (and its broker lock) for too long.</summary>
    public const int MaxImmediateRetries = 100;

    /// <summary>Most delayed retries accepted.</summary>
    public const int MaxDelayedRetries = 10_000;

    /// <summary>Longest delay every transport holds: RabbitMQ's per-message TTL, a signed 32-bit count of milliseconds (about 24.8 days).</summary>
    internal static readonly TimeSpan LongestDelay = TimeSpan.FromMilliseconds(int.MaxValue);

    /// <summary>Creates a builder with the default settings.</summary>
    public RetryPolicyBuilder()
    {
        NeverRetried = new HashSet<Type> { typeof(MessageDeserializationException), typeof(UnknownMessageTypeException), typeof(ValidationException), typeof(Sagas.SagaMessageRejectedException) };
    }

    internal RetryPolicyBuilder(RetryPolicy policy)
    {
        ImmediateRetries = policy.ImmediateRetries;
        DelayedRetries = policy.DelayedRetries;
        MinDelay = policy.MinDelay;
        MaxDelay = policy.MaxDelay;
        Factor = policy.Factor;
        NeverRetried = new HashSet<Type>(policy.NeverRetried);
    }

    /// <summary>Attempts re-run at once after the first attempt fails (default 2).</summary>
    public int ImmediateRetries { get; set; } = 2;

    /// <summary>Redeliveries with a backoff delay once the immediate retries are spent (default 3).</summary>
    public int DelayedRetries { get; set; } = 3;

    /// <summary>Shortest delay before a redelivery (default 1 second).</summary>
    public TimeSpan MinDelay { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Longest delay before a redelivery (default 1 minute).</summary>
    public TimeSpan MaxDelay { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Growth of the delay ceiling per delayed retry, at least 1 (default 4).</summary>
    public double Factor { get; set; } = 4;

    /// <summary>Exception types never retried (their subtypes neither).</summary>
    public ISet<Type> NeverRetried { get; }

    /// <summary>Sets the number of immediate retries.</summary>
    public RetryPolicyBuilder Immediate(int retries)
    {
        ImmediateRetries = retries;
        return this;
    }

    /// <summary>Sets the delayed retries: how many, the delay bounds and the growth factor of the ceiling.</summary>
    public RetryPolicyBuilder Delayed(int retries, TimeSpan minDelay, TimeSpan maxDelay, double factor = 2)
    {
        DelayedRetries = retries;
        MinDelay = minDelay;
        MaxDelay = maxDelay;
        Factor = factor;
        return this;
    }

    /// <summary>No immediate and no delayed retries: the first failure dead-letters the message.</summary>
    public RetryPolicyBuilder NoRetries()
    {
        ImmediateRetries = 0;
        DelayedRetries = 0;
        return this;
    }

    /// <summary>Never retries this exception type (nor its subtypes): such a failure goes straight to the dead letters.</summary>
    public RetryPolicyBuilder NeverRetry<TException>()
        where TException : Exception => NeverRetry(typeof(TException));

    /// <summary>Never retries this exception type (nor its subtypes).</summary>
    public RetryPolicyBuilder NeverRetry(Type exceptionType)
    {
        ArgumentNullException.ThrowIfNull(exceptionType);
        if (!typeof(Exception).IsAssignableFrom(exceptionType))
        {
            throw new ArgumentException($"'{exceptionType.FullName}' is not an exception type, so it cannot be marked never retried.", nameof(exceptionType));
        }

        NeverRetried.Add(exceptionType);
        return this;
    }

    /// <summary>Retries this exception type again, undoing <see cref="NeverRetry{TException}"/> or a default (such as validation failures).</summary>
    public RetryPolicyBuilder AllowRetry<TException>()
        where TException : Exception
    {
        NeverRetried.Remove(typeof(TException));
        return this;
    }

    /// <summary>Every problem of the current settings, as sentences naming the setting; empty when they are valid.</summary>
    public IReadOnlyList<string> Validate()
    {
        var problems = new List<string>();
        if (ImmediateRetries is < 0 or > MaxImmediateRetries)
        {
            problems.Add($"ImmediateRetries must be between 0 and {MaxImmediateRetries}, not {ImmediateRetries}.");
        }

        if (DelayedRetries is < 0 or > MaxDelayedRetries)
        {
            problems.Add($"DelayedRetries must be between 0 and {MaxDelayedRetries}, not {DelayedRetries}.");
        }

        if (MinDelay < TimeSpan.Zero)
        {
            problems.Add($"MinDelay must not be negative, not {MinDelay}.");
        }

        if (MaxDelay < TimeSpan.Zero)
        {
            problems.Add($"MaxDelay must not be negative, not {MaxDelay}.");
        }

        if (MaxDelay > LongestDelay)
        {
            // Beyond this a delayed retry overflows a transport's delay (RabbitMQ's queue TTL, timers) instead of waiting.
            problems.Add($"MaxDelay must be at most {LongestDelay} (the longest delay every transport can hold), not {MaxDelay}.");
        }

        if (MinDelay > MaxDelay)
        {
            problems.Add($"MinDelay ({MinDelay}) must not be greater than MaxDelay ({MaxDelay}).");
        }

        if (double.IsNaN(Factor) || double.IsInfinity(Factor) || Factor < 1)
        {
            problems.Add($"Factor must be a finite number of at least 1, not {Factor.ToString(CultureInfo.InvariantCulture)}.");
        }

        return problems;
    }

    /// <summary>Builds the immutable policy; throws <see cref="InvalidRetryPolicyException"/> naming every problem when the settings are impossible.</summary>
    public RetryPolicy Build() => Build("The retry policy");

    internal RetryPolicy Build(string scope)
    {
        var problems = Validate();
        if (problems.Count > 0)
        {
            throw new InvalidRetryPolicyException(scope, problems);
        }

        return new RetryPolicy(ImmediateRetries, DelayedRetries, MinDelay, MaxDelay, Factor, NeverRetried);
    }
}
