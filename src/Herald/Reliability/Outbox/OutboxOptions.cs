using Herald.Hosting;

namespace Herald.Reliability.Outbox;

/// <summary>Settings of the outbox relay, turned on with <c>h.UseOutbox(o => ...)</c>; validated at start.</summary>
public sealed class OutboxOptions
{
    /// <summary>How often the relay looks for pending messages when no commit woke it (at most about 24.8 days). Default 1 second.</summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Most messages read per round trip. Default 100.</summary>
    public int BatchSize { get; set; } = 100;

    /// <summary>First pause after a failed send; it doubles on every failure in a row up to <see cref="MaxBackoff"/>. Default 100 ms.</summary>
    public TimeSpan MinBackoff { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Longest pause while the transport keeps failing (at most about 24.8 days). Default 30 seconds.</summary>
    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Failed sends after which the relay gives up on a message and moves it to the dead letters (cause
    /// <c>SendRejected</c>). Each message backs off on its own, from <see cref="MinBackoff"/> doubling to
    /// <see cref="MaxBackoff"/>, so the default 100 gives up after about 50 minutes of failing (a longer broker outage
    /// dead-letters the messages that kept failing; replay them from the dead letters). A failure the transport
    /// calls permanent is dead-lettered at once. Default 100.
    /// </summary>
    public int MaxAttempts { get; set; } = 100;

    /// <summary>How long sent messages are kept before cleanup deletes them (<see cref="TimeSpan.MaxValue"/>: for ever). Default 10 minutes.</summary>
    public TimeSpan Retention { get; set; } = TimeSpan.FromMinutes(10);

    /// <summary>How often sent messages past <see cref="Retention"/> are deleted (<see cref="TimeSpan.MaxValue"/>: never). Default 1 minute.</summary>
    public TimeSpan CleanupInterval { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Most sent messages deleted per round trip, so cleanup never holds long locks. Default 1,000.</summary>
    public int CleanupBatchSize { get; set; } = 1000;

    /// <summary>
    /// Whether messages that handlers send or publish, through their <c>MessageContext</c> or an injected <c>IMessageBus</c>
    /// (in a message's or a command's unit of work), go through the outbox. Default true.
    /// </summary>
    public bool RouteHandlerMessages { get; set; } = true;

    internal IEnumerable<string> Validate()
    {
        if (PollInterval <= TimeSpan.Zero)
        {
            yield return $"OutboxOptions.PollInterval must be positive, not {PollInterval}.";
        }

        if (BatchSize < 1)
        {
            yield return $"OutboxOptions.BatchSize must be at least 1, not {BatchSize}.";
        }

        if (MinBackoff <= TimeSpan.Zero || MaxBackoff < MinBackoff)
        {
            yield return $"OutboxOptions.MinBackoff ({MinBackoff}) must be positive and at most MaxBackoff ({MaxBackoff}).";
        }

        if (MaxAttempts < 1)
        {
            yield return $"OutboxOptions.MaxAttempts must be at least 1, not {MaxAttempts}.";
        }

        if (Retention < TimeSpan.Zero)
        {
            yield return $"OutboxOptions.Retention must not be negative, not {Retention}.";
        }

        if (CleanupInterval <= TimeSpan.Zero)
        {
            yield return $"OutboxOptions.CleanupInterval must be positive, not {CleanupInterval}.";
        }

        if (CleanupBatchSize < 1)
        {
            yield return $"OutboxOptions.CleanupBatchSize must be at least 1, not {CleanupBatchSize}.";
        }

        // The relay waits these out on timers: a longer one passed here, then stopped the relay (and the host) at its first
        // wait. CleanupInterval and Retention are only added to dates, saturating: TimeSpan.MaxValue means never and for ever.
        foreach (var problem in OptionLimits.Waits(nameof(OutboxOptions), (nameof(PollInterval), PollInterval), (nameof(MaxBackoff), MaxBackoff)))
        {
            yield return problem;
        }
    }
}
