using Herald.AspNetCore;
using Herald.AspNetCore.Guards;
using Herald.AspNetCore.Idempotency;
using Herald.AspNetCore.Problems;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's HTTP glue to a service collection.</summary>
public static class HeraldAspNetCoreServiceCollectionExtensions
{
    /// <summary>
    /// Registers problem details (every problem carries <c>traceId</c> and <c>correlationId</c>) and an exception handler that
    /// maps Herald's exceptions (validation 400 with every error, concurrency 409, unreadable body 400/413/415, the
    /// application's own through <see cref="HeraldHttpOptions.MapException{TException}"/>, anything else 500 without its
    /// message), and the services behind <c>AcceptsJson</c> and <c>WithIdempotencyKey</c>. Use it with
    /// <c>app.UseExceptionHandler()</c>, <c>app.UseStatusCodePages()</c> (bare 404, 405 and 415 statuses become problems saying why)
    /// and <c>app.UseHeraldCorrelation()</c>.
    /// </summary>
    public static IServiceCollection AddHeraldAspNetCore(this IServiceCollection services, Action<HeraldHttpOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var options = services.AddOptions<HeraldHttpOptions>();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.Validate(o => !o.Validate().Any(), "HeraldHttpOptions.MaxRequestBodyBytes must be positive.").ValidateOnStart();
        services.AddProblemDetails();

        // After every Configure: an application setting CustomizeProblemDetails once this ran replaced the stamp, and its
        // problems lost their correlation id. Its own customization runs first, as before.
        services.PostConfigure<ProblemDetailsOptions>(o =>
        {
            var customize = o.CustomizeProblemDetails;
            o.CustomizeProblemDetails = context =>
            {
                customize?.Invoke(context);
                HttpProblems.Stamp(context.HttpContext, context.ProblemDetails);
            };
        });

        // Body-binding failures throw (and become problems with their reason) instead of a bare 400 or 415.
        services.Configure<RouteHandlerOptions>(o => o.ThrowOnBadRequest = true);
        services.AddExceptionHandler<HeraldExceptionHandler>();
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<RequestGuard>();
        services.TryAddSingleton<IdempotentRequests>();
        return services;
    }
}
