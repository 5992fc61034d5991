using Herald.AspNetCore.Guards;
using Herald.AspNetCore.Internal;
using Microsoft.AspNetCore.Http;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Guards for endpoints that read a JSON body.</summary>
public static class HeraldRequestGuardExtensions
{
    /// <summary>
    /// Declares that the endpoint reads a <typeparamref name="TRequest"/> as JSON, and answers a request whose body is not JSON
    /// with 415 and one longer than <paramref name="maxBodyBytes"/> (default <c>HeraldHttpOptions.MaxRequestBodyBytes</c>) with
    /// 413, as problem details, before the body is bound.
    /// </summary>
    public static RouteHandlerBuilder AcceptsJson<TRequest>(this RouteHandlerBuilder builder, long? maxBodyBytes = null)
        where TRequest : notnull
    {
        ArgumentNullException.ThrowIfNull(builder);
        builder.Accepts<TRequest>("application/json");
        return builder.RequireJsonBody(maxBodyBytes);
    }

    /// <summary>
    /// Answers a request whose body is not JSON with 415 and one longer than <paramref name="maxBodyBytes"/> (default
    /// <c>HeraldHttpOptions.MaxRequestBodyBytes</c>) with 413, on an endpoint or every endpoint of a group.
    /// </summary>
    public static TBuilder RequireJsonBody<TBuilder>(this TBuilder builder, long? maxBodyBytes = null)
        where TBuilder : IEndpointConventionBuilder
    {
        ArgumentNullException.ThrowIfNull(builder);
        if (maxBodyBytes is <= 0)
        {
            throw new ArgumentOutOfRangeException(nameof(maxBodyBytes), maxBodyBytes, "The body limit must be positive.");
        }

        return HeraldEndpointPipeline.Add(builder, new JsonBodyMetadata(maxBodyBytes));
    }
}
