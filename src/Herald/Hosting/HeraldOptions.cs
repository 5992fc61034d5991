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
            yield return $"HeraldOptions.MaxReceivedMessageBytes must be at least 1 when set, not {MaxReceivedMessageBytes} (set in h.Configure(o => ...)).";
        }

        if (string.IsNullOrWhiteSpace(EndpointName))
        {
            yield return "HeraldOptions.EndpointName must not be empty: it names this endpoint's queue (set it in h.Configure(o => o.EndpointName = \"orders\")).";
        }

        if (MaxConcurrency < 1)
        {
            yield return $"HeraldOptions.MaxConcurrency must be at least 1, not {MaxConcurrency} (set in h.Configure(o => ...)).";
        }

        if (Prefetch < 1)
        {
            yield return $"HeraldOptions.Prefetch must be at least 1, not {Prefetch} (set in h.Configure(o => ...)).";
        }

        if (ShutdownTimeout < TimeSpan.Zero)
        {
            yield return $"HeraldOptions.ShutdownTimeout must not be negative, not {ShutdownTimeout} (set in h.Configure(o => ...)).";
        }

        foreach (var problem in OptionLimits.Waits(nameof(HeraldOptions), (nameof(ShutdownTimeout), ShutdownTimeout)))
        {
            yield return problem;
        }
    }
}
