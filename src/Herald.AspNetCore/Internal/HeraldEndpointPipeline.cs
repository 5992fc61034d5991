using Herald.AspNetCore.Guards;
using Herald.AspNetCore.Idempotency;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AspNetCore.Internal;

/// <summary>
/// The one wrapper Herald puts around an endpoint's request delegate. It runs before the endpoint binds its parameters (an
/// endpoint filter runs after, when the body is already read), in a fixed order whatever order the conventions were added
/// in: the body guard first (415, 413), then the idempotency key, so a rejected request never claims a key.
/// </summary>
internal static class HeraldEndpointPipeline
{
    private static readonly object Marker = new();

    /// <summary>Adds <paramref name="metadata"/> to every endpoint of the builder and wraps each endpoint once.</summary>
    public static TBuilder Add<TBuilder>(TBuilder builder, object metadata)
        where TBuilder : IEndpointConventionBuilder
    {
        builder.Add(endpoint =>
        {
            endpoint.Metadata.Add(metadata);
            if (endpoint.Metadata.Contains(Marker))
            {
                return;
            }

            endpoint.Metadata.Add(Marker);
            var inner = endpoint.RequestDelegate
                ?? throw new InvalidOperationException($"Endpoint '{endpoint.DisplayName}' has no request delegate to guard.");
            endpoint.RequestDelegate = context => InvokeAsync(context, inner);
        });
        return builder;
    }

    private static async Task InvokeAsync(HttpContext context, RequestDelegate inner)
    {
        var metadata = context.GetEndpoint()?.Metadata;
        var json = metadata?.GetMetadata<JsonBodyMetadata>();
        if (json is not null)
        {
            var guard = context.RequestServices.GetService<RequestGuard>() ?? throw NotRegistered();
            if (!await guard.CheckAsync(context, json).ConfigureAwait(false))
            {
                return;
            }
        }

        if (metadata?.GetMetadata<IdempotencyKeyMetadata>() is { } idempotency)
        {
            var requests = context.RequestServices.GetService<IdempotentRequests>() ?? throw NotRegistered();
            await requests.InvokeAsync(context, idempotency.Options, json?.MaxBodyBytes, inner).ConfigureAwait(false);
            return;
        }

        await inner(context).ConfigureAwait(false);
    }

    private static InvalidOperationException NotRegistered() =>
        new("Herald's endpoint conventions (AcceptsJson, WithIdempotencyKey) need services.AddHeraldAspNetCore() (and services.AddHerald()).");
}
