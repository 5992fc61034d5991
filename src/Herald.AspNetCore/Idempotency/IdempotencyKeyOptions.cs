using Herald.Internal;

namespace Herald.AspNetCore;

/// <summary>How an endpoint honours the <c>Idempotency-Key</c> header (set in <c>WithIdempotencyKey(o => ...)</c>).</summary>
public sealed class IdempotencyKeyOptions
{
    /// <summary>When true, a request without the header is answered 400; when false (the default) it runs without idempotency.</summary>
    public bool Required { get; set; }

    /// <summary>Longest accepted key, in characters. Default 255.</summary>
    public int MaxKeyLength { get; set; } = 255;

    /// <summary>Which requests share a key's namespace. Default: the route and the authenticated user.</summary>
    public IdempotencyKeyScope Scope { get; set; } = IdempotencyKeyScope.RouteAndUser;

    /// <summary>How long a completed response is kept and replayed. Default 24 hours.</summary>
    public TimeSpan Expiration { get; set; } = TimeSpan.FromHours(24);

    /// <summary>The <c>Retry-After</c> a request gets while the first request with its key is still running. Default 1 second.</summary>
    public TimeSpan RetryAfter { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Largest response body kept for replay (and buffered before it is sent); a larger response is sent on as it is written,
    /// not stored, and its key released. Default 1 MiB.
    /// </summary>
    public int MaxStoredResponseBytes { get; set; } = 1024 * 1024;

    internal void Validate()
    {
        if (MaxKeyLength < 1)
        {
            throw new ArgumentException($"IdempotencyKeyOptions.MaxKeyLength must be positive, not {MaxKeyLength}.");
        }

        if (Expiration <= TimeSpan.Zero)
        {
            throw new ArgumentException($"IdempotencyKeyOptions.Expiration must be positive, not {Expiration}.");
        }

        // Added to the time of day when a response is stored: a longer one passed here and failed every request with a key.
        OptionsProblems.Of(this, static (options, problems) => problems.AtMostLongestSpan(nameof(Expiration), options.Expiration)).ThrowFirstAsArgumentException();

        if (RetryAfter < TimeSpan.Zero)
        {
            throw new ArgumentException($"IdempotencyKeyOptions.RetryAfter must not be negative, not {RetryAfter}.");
        }

        if (MaxStoredResponseBytes < 0)
        {
            throw new ArgumentException($"IdempotencyKeyOptions.MaxStoredResponseBytes must not be negative, not {MaxStoredResponseBytes}.");
        }
    }
}

/// <summary>Which requests share an idempotency key's namespace.</summary>
public enum IdempotencyKeyScope
{
    /// <summary>Keys are per route (method and pattern) and per authenticated user: one user's key never meets another's.</summary>
    RouteAndUser,

    /// <summary>Keys are per authenticated user across routes: reusing a key on another route is a different request (422).</summary>
    User,
}
