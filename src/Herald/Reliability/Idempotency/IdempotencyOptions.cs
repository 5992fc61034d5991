using Herald.Hosting;

namespace Herald.Reliability.Idempotency;

/// <summary>Settings of the <see cref="IdempotencyService"/>, set with <c>h.ConfigureIdempotency(o => ...)</c>; validated at start.</summary>
public sealed class IdempotencyOptions
{
    /// <summary>How long the first caller's lock lasts unrenewed: renewed every third of it while the operation runs and its result is stored, it bounds how long a dead caller's lock keeps the key. Default 30 seconds.</summary>
    public TimeSpan LockTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a concurrent caller waits for the first caller's result before <see cref="IdempotencyTimeoutException"/>. Default 30 seconds.</summary>
    public TimeSpan WaitTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>First pause between polls of the store while waiting; it doubles up to <see cref="MaxPollInterval"/>. Default 10 ms.</summary>
    public TimeSpan MinPollInterval { get; set; } = TimeSpan.FromMilliseconds(10);

    /// <summary>Longest pause between polls. Default 1 second.</summary>
    public TimeSpan MaxPollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>How long a result the store fails to take is tried again (the lock renewed between tries) before the caller gets it unstored and the lock is left to lapse. Default 5 minutes.</summary>
    public TimeSpan CompletionTimeout { get; set; } = TimeSpan.FromMinutes(5);

    internal IEnumerable<string> Validate()
    {
        if (LockTimeout <= TimeSpan.Zero)
        {
            yield return $"IdempotencyOptions.LockTimeout must be positive, not {LockTimeout}.";
        }

        if (WaitTimeout < TimeSpan.Zero)
        {
            yield return $"IdempotencyOptions.WaitTimeout must not be negative, not {WaitTimeout}.";
        }

        if (CompletionTimeout <= TimeSpan.Zero)
        {
            yield return $"IdempotencyOptions.CompletionTimeout must be positive, not {CompletionTimeout}.";
        }

        if (MinPollInterval <= TimeSpan.Zero || MaxPollInterval < MinPollInterval)
        {
            yield return $"IdempotencyOptions.MinPollInterval ({MinPollInterval}) must be positive and at most MaxPollInterval ({MaxPollInterval}).";
        }

        var tooLong = OptionLimits.Waits(
            nameof(IdempotencyOptions),
            (nameof(LockTimeout), LockTimeout),
            (nameof(WaitTimeout), WaitTimeout),
            (nameof(MaxPollInterval), MaxPollInterval),
            (nameof(CompletionTimeout), CompletionTimeout));
        foreach (var problem in tooLong)
        {
            yield return problem;
        }
    }
}
