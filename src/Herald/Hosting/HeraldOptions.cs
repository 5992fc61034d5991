namespace Herald.Hosting;

/// <summary>Settings of this host's endpoint, validated at start. Retries are configured with <c>h.ConfigureRetries(...)</c>.</summary>
public sealed class HeraldOptions
{
    /// <summary>Name of this service's endpoint: its input queue and the subscription name on every topic it handles.</summary>
    public string EndpointName { get; set; } = "herald";

    /// <summary>How many messages the endpoint handles at once.</summary>
    public int MaxConcurrency { get; set; } = Environment.ProcessorCount;

    /// <summary>How many messages the endpoint's consumer may hold ahead of its handlers.</summary>
    public int Prefetch { get; set; } = 64;

    /// <summary>How long shutdown waits for in-flight messages before cancelling them (they then go back to the queue).</summary>
    public TimeSpan ShutdownTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Whether the hosted consumer starts with the host (off for send-only hosts).</summary>
    public bool StartConsumer { get; set; } = true;

    /// <summary>
    /// Largest body this endpoint accepts, in bytes; a larger delivery is dead-lettered as <c>TooLarge</c> without being
    /// read. Null (the default): the transport's send limit (<c>TransportCapabilities.MaxMessageBytes</c>).
    /// </summary>
    public int? MaxReceivedMessageBytes { get; set; }

    internal IEnumerable<string> Validate()
    {
        if (MaxReceivedMessageBytes is < 1)
        {
            yield return $"MaxReceivedMessageBytes must be at least 1 when set, not {MaxReceivedMessageBytes}.";
        }

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

        if (ShutdownTimeout < TimeSpan.Zero)
        {
            yield return $"ShutdownTimeout must not be negative, not {ShutdownTimeout}.";
        }

        foreach (var problem in OptionLimits.Waits(nameof(HeraldOptions), (nameof(ShutdownTimeout), ShutdownTimeout)))
        {
            yield return problem;
        }
    }
}
