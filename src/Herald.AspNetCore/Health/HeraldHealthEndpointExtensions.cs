using Herald.AspNetCore.Health;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Routing;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Maps the health endpoint.</summary>
public static class HeraldHealthEndpointExtensions
{
    /// <summary>
    /// Maps <paramref name="pattern"/> to every registered health check, answering a JSON body with each check's status,
    /// description and data: 200 when Healthy or Degraded, 503 when Unhealthy.
    /// </summary>
    public static IEndpointConventionBuilder MapHeraldHealth(this IEndpointRouteBuilder endpoints, string pattern = "/health")
    {
        ArgumentNullException.ThrowIfNull(endpoints);
        return endpoints.MapHealthChecks(pattern, new HealthCheckOptions { ResponseWriter = HealthResponseWriter.WriteAsync });
    }
}
