using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Reliability.Retry;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;

namespace Herald.Hosting;

/// <summary>Retries, dead letters, inbox, outbox and idempotency.</summary>
public sealed partial class HeraldBuilder
{
    internal RetryPolicies Retries { get; } = new();

    /// <summary>
    /// Changes the global retry policy (see <see cref="RetryPolicy"/> for how attempts count). Validated at once: an
    /// impossible policy throws <see cref="InvalidRetryPolicyException"/> here. The action may run more than once.
    /// </summary>
    public HeraldBuilder ConfigureRetries(Action<RetryPolicyBuilder> configure)
    {
        Retries.ConfigureGlobal(configure);
        return this;
    }

    /// <summary>Changes the retry policy of one endpoint, on top of the global one; validated at once.</summary>
    public HeraldBuilder ConfigureRetries(string endpoint, Action<RetryPolicyBuilder> configure)
    {
        Retries.ConfigureEndpoint(endpoint, configure);
        return this;
    }

    /// <summary>Changes the retry policy of one message type, on top of the global and endpoint ones; validated at once.</summary>
    public HeraldBuilder ConfigureRetries<TMessage>(Action<RetryPolicyBuilder> configure)
    {
        Retries.ConfigureMessageType(typeof(TMessage), configure);
        return this;
    }

    /// <summary>Changes the dead-letter settings (alert thresholds, monitoring interval...).</summary>
    public HeraldBuilder ConfigureDeadLetters(Action<DeadLetterOptions> configure)
    {
        Services.Configure(configure);
        return this;
    }

    /// <summary>
    /// Registers the hook that authenticates the user id a delivered message claims (a singleton); without one the wire's
    /// claim is never trusted (<see cref="Handling.MessageContext.UserId"/> is null).
    /// </summary>
    public HeraldBuilder UseMessageAuthenticator<TAuthenticator>()
        where TAuthenticator : class, Handling.IMessageAuthenticator
    {
        Services.Replace(ServiceDescriptor.Singleton<Handling.IMessageAuthenticator, TAuthenticator>());
        return this;
    }

    /// <summary>Adds a hook called when an endpoint's dead letters reach the alert threshold (a singleton; every registered hook is called).</summary>
    public HeraldBuilder AddDeadLetterAlert<TAlert>()
        where TAlert : class, IDeadLetterAlert
    {
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IDeadLetterAlert, TAlert>());
        return this;
    }

    /// <summary>
    /// Turns the inbox on: duplicates of a message an endpoint already handled (within the window) are acked without
    /// running its handlers. The mark is written in the attempt's unit of work, so it commits with the handler's writes.
    /// </summary>
    public HeraldBuilder UseInbox(Action<InboxOptions>? configure = null)
    {
        if (configure is not null)
        {
            Services.Configure(configure);
        }

        if (!Services.Any(d => d.ServiceType == typeof(InboxStep)))
        {
            Services.AddSingleton<InboxStep>();
            Services.AddSingleton<InboxCleanupService>();
            Services.AddSingleton<IHostedService>(sp => sp.GetRequiredService<InboxCleanupService>());
        }

        return this;
    }

    /// <summary>
    /// Turns the outbox on: <see cref="IOutbox"/> (and, by default, send and publish from handlers) write messages in the
    /// unit of work, and a relay sends them once it has committed, retrying with backoff while the transport is down.
    /// </summary>
    public HeraldBuilder UseOutbox(Action<OutboxOptions>? configure = null)
    {
        if (configure is not null)
        {
            Services.Configure(configure);
        }

        if (!Services.Any(d => d.ServiceType == typeof(OutboxRelay)))
        {
            Services.AddScoped<IOutbox, Outbox>();
            Services.AddSingleton<OutboxRelay>();
            Services.AddSingleton<IHostedService>(sp => sp.GetRequiredService<OutboxRelay>());
        }

        return this;
    }

    /// <summary>Changes the settings of the <see cref="IdempotencyService"/> (lock and wait timeouts, polling).</summary>
    public HeraldBuilder ConfigureIdempotency(Action<IdempotencyOptions> configure)
    {
        Services.Configure(configure);
        return this;
    }
}
