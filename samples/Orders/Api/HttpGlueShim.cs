// TEMPORARY: stands in for Herald.AspNetCore (branch aspnet) until it is merged; deleted then.
#pragma warning disable CA1062, CA1031, CS1591
using System.Diagnostics;
using Herald.Cqrs.Validation;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Mvc;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Microsoft.AspNetCore.Http
{
    public static class HeraldHttpContextExtensions
    {
        public static string GetCorrelationId(this HttpContext context)
        {
            if (context.Items["cid"] is string id)
            {
                return id;
            }

            var made = context.Request.Headers["X-Correlation-Id"].FirstOrDefault() is { Length: > 0 and <= 128 } given ? given : Guid.CreateVersion7().ToString("N");
            context.Items["cid"] = made;
            return made;
        }

        public static EventMetadata GetEventMetadata(this HttpContext context)
        {
            Dictionary<string, string>? headers = null;
            if (Activity.Current is { IdFormat: ActivityIdFormat.W3C, Id: { } traceParent })
            {
                headers = new Dictionary<string, string>(StringComparer.Ordinal) { ["traceparent"] = traceParent };
            }

            return new EventMetadata { CorrelationId = context.GetCorrelationId(), CausationId = context.TraceIdentifier, Headers = headers };
        }
    }
}

namespace Microsoft.AspNetCore.Builder
{
    public static class HeraldShimExtensions
    {
        public static IApplicationBuilder UseHeraldCorrelation(this IApplicationBuilder app) => app.Use(async (context, next) =>
        {
            context.Response.Headers["X-Correlation-Id"] = context.GetCorrelationId();
            await next(context);
        });

        public static TBuilder WithIdempotencyKey<TBuilder>(this TBuilder builder, Action<object>? configure = null)
            where TBuilder : IEndpointConventionBuilder => builder;

        public static IEndpointConventionBuilder MapHeraldHealth(this IEndpointRouteBuilder endpoints, string pattern = "/health") =>
            endpoints.MapHealthChecks(pattern);
    }
}

namespace Microsoft.Extensions.DependencyInjection
{
    public sealed class HeraldHttpOptions
    {
        internal Dictionary<Type, (int Status, string? Title)> Map { get; } = [];

        public HeraldHttpOptions MapException<TException>(int status, string? title = null)
        {
            Map[typeof(TException)] = (status, title);
            return this;
        }
    }

    public static class HeraldShimServiceCollectionExtensions
    {
        public static IServiceCollection AddHeraldAspNetCore(this IServiceCollection services, Action<HeraldHttpOptions>? configure = null)
        {
            var options = new HeraldHttpOptions();
            options.MapException<ValidationException>(400);
            options.MapException<ConcurrencyException>(409);
            configure?.Invoke(options);
            services.AddSingleton(options);
            services.AddProblemDetails();
            services.AddExceptionHandler<ShimExceptionHandler>();
            return services;
        }

        public static IHealthChecksBuilder AddHerald(this IHealthChecksBuilder builder, Action<object>? configure = null) => builder;
    }

    internal sealed class ShimExceptionHandler(HeraldHttpOptions options) : IExceptionHandler
    {
        public async ValueTask<bool> TryHandleAsync(HttpContext httpContext, Exception exception, CancellationToken cancellationToken)
        {
            var (status, title) = exception is BadHttpRequestException bad ? (bad.StatusCode, "Bad request") : options.Map.TryGetValue(exception.GetType(), out var mapped) ? mapped : (500, "Error");
            var problem = new ProblemDetails { Status = status, Title = title, Detail = exception.Message };
            if (exception is ValidationException validation)
            {
                problem.Extensions["errors"] = validation.Errors.Select(e => new { e.Property, e.Message }).ToList();
            }

            httpContext.Response.StatusCode = status;
            await httpContext.Response.WriteAsJsonAsync(problem, cancellationToken);
            return true;
        }
    }
}
