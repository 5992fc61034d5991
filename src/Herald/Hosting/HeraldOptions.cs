namespace Herald.Hosting;

/// <summary>Settings of this host's endpoint, validated at start.</summary>
public sealed class HeraldOptions
{
    /// <summary>Name of this service's endpoint: its input queue and the subscription name on every topic it handles.</summary>
    public string EndpointName { get; set; } = "herald";

    /// <summary>How many messages the endpoint handles at once.</summary>
    public int MaxConcurrency { get; set; } = Environment.ProcessorCount;

    /// <summary>How many messages the endpoint's consumer may hold ahead of its handlers.</summary>
    public int Prefetch { get; set; } = 64;

    /// <summary>Deliveries of one message before it goes to the dead letters.</summary>
    public int MaxDeliveryAttempts { get; set; } = 5;

    /// <summary>Delay before the first redelivery of a failed message; it doubles each time up to <see cref="MaxRedeliveryDelay"/>.</summary>
    public TimeSpan RedeliveryDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>Longest delay between redeliveries.</summary>
    public TimeSpan MaxRedeliveryDelay { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>How long shutdown waits for in-flight messages before cancelling them (they then go back to the queue).</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Whether the hosted consumer starts with the host (off for send-only hosts).</summary>
    public bool StartConsumer { get; set; } = true;

    internal IEnumerable<string> Validate()
    {
        if (string.IsNullOrWhiteSpace(EndpointName))
        {
            yield return "EndpointName must not be empty.";
        }

        if (MaxConcurrency < 1)
        {
            yield return $"MaxConcurrency must be at least 1, not {MaxConcurrency}.";
        }

        if (Prefetch < 1)
        {
            yield return $"Prefetch must be at least 1, not {Prefetch}.";
        }

        if (MaxDeliveryAttempts < 1)
        {
            yield return $"MaxDeliveryAttempts must be at least 1, not {MaxDeliveryAttempts}.";
        }

        if (RedeliveryDelay < TimeSpan.Zero || MaxRedeliveryDelay < RedeliveryDelay)
        {
            yield return $"RedeliveryDelay ({RedeliveryDelay}) must be zero or more and at most MaxRedeliveryDelay ({MaxRedeliveryDelay}).";
        }

        if (ShutdownTimeout < TimeSpan.Zero)
        {
            yield return $"ShutdownTimeout must not be negative, not {ShutdownTimeout}.";
        }
    }
}
