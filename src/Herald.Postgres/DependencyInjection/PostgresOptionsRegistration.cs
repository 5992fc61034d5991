using Herald.Hosting;
using Herald.Internal;
using Herald.Postgres.Internal;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.Postgres.DependencyInjection;

/// <summary>Registers a PostgreSQL options type checked at start, and resolves it with the host's clock and loggers.</summary>
internal static class PostgresOptionsRegistration
{
    public static void AddPostgresOptions<TOptions>(this HeraldBuilder builder, string connectionString, Action<TOptions>? configure, Action<TOptions, OptionsProblems> check)
        where TOptions : class, IPostgresOptions<TOptions>
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        builder.Services.AddCheckedOptions(configure, check);
    }

    /// <summary>A copy of the configured options, with the host's clock and loggers where the options name none.</summary>
    public static TOptions ResolvePostgresOptions<TOptions>(this IServiceProvider services)
        where TOptions : class, IPostgresOptions<TOptions>
    {
        var configured = services.GetRequiredService<IOptions<TOptions>>().Value.Clone();
        configured.TimeProvider ??= services.GetService<TimeProvider>();
        configured.LoggerFactory ??= services.GetService<ILoggerFactory>();
        return configured;
    }
}
