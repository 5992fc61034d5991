using Herald.AspNetCore.Correlation;

namespace Microsoft.AspNetCore.Builder;

/// <summary>Adds Herald's correlation middleware to an application.</summary>
public static class HeraldCorrelationApplicationBuilderExtensions
{
    /// <summary>
    /// Reads <c>X-Correlation-Id</c> (at most 128 visible ASCII characters, else 400), makes one (a Guid v7) when it is absent,
    /// echoes it on the response and tags the current activity with it; read it with <c>HttpContext.GetCorrelationId()</c>
    /// and pass <c>HttpContext.GetEventMetadata()</c> to the command bus. Place it after <c>UseExceptionHandler()</c>.
    /// </summary>
    public static IApplicationBuilder UseHeraldCorrelation(this IApplicationBuilder app)
    {
        ArgumentNullException.ThrowIfNull(app);
        return app.UseMiddleware<CorrelationMiddleware>();
    }
}
