using Herald.Hosting;
using Herald.Internal;
using Herald.Sqlite.Internal;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.DependencyInjection;

/// <summary>Registers a SQLite options type named by the file <c>UseSqlite</c> or <c>UseSqliteQueue</c> was given, checked at start.</summary>
internal static class SqliteOptionsRegistration
{
    public static void AddFileOptions<TOptions>(this HeraldBuilder builder, string pathOrConnectionString, Action<TOptions>? configure, Action<TOptions, OptionsProblems> check)
        where TOptions : class, ISqliteFileOptions
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentException.ThrowIfNullOrWhiteSpace(pathOrConnectionString);
        builder.Services.AddCheckedOptions<TOptions>(
            options =>
            {
                options.ConnectionString = pathOrConnectionString;
                configure?.Invoke(options);
            },
            check);
    }
}
