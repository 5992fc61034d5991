using Herald.AspNetCore;
using Herald.AspNetCore.Idempotency;
using Herald.AspNetCore.Internal;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Makes endpoints honour the <c>Idempotency-Key</c> header.</summary>
public static class HeraldIdempotencyEndpointExtensions
{
    /// <summary>
    /// Runs the endpoint (or every endpoint of a group) at most once per <c>Idempotency-Key</c>: a retry with the same key and
    /// request gets the first response again, byte for byte, with <c>Idempotency-Replayed: true</c>; the same key with another
    /// request gets 422; a retry while the first still runs gets 409 with <c>Retry-After</c>; a first attempt that fails (5xx
    /// or an exception) frees the key. Responses live in Herald's idempotency store. A response is buffered until it is stored;
    /// one larger than <see cref="IdempotencyKeyOptions.MaxStoredResponseBytes"/> is sent as it is written and not stored.
    /// </summary>
    public static TBuilder WithIdempotencyKey<TBuilder>(this TBuilder builder, Action<IdempotencyKeyOptions>? configure = null)
        where TBuilder : IEndpointConventionBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = new IdempotencyKeyOptions();
        configure?.Invoke(options);
        options.Validate();
        return HeraldEndpointPipeline.Add(builder, new IdempotencyKeyMetadata(options));
    }
}
