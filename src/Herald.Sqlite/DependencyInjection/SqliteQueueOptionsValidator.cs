using Herald.Sqlite.Transport;
using Microsoft.Extensions.Options;

namespace Herald.Sqlite.DependencyInjection;

/// <summary>Checks <see cref="SqliteQueueOptions"/> at start, so a bad setting fails the host instead of the first send.</summary>
internal sealed class SqliteQueueOptionsValidator : IValidateOptions<SqliteQueueOptions>
{
    // SQLite refuses values longer than its SQLITE_MAX_LENGTH (1,000,000,000 bytes in the bundled build).
    private const int LargestBlob = 1_000_000_000;

    public ValidateOptionsResult Validate(string? name, SqliteQueueOptions options)
    {
        var errors = Errors(options).ToList();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Throws <see cref="OptionsValidationException"/> listing every problem.</summary>
    public static void ThrowIfInvalid(SqliteQueueOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = Errors(options).ToList();
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(Options.DefaultName, typeof(SqliteQueueOptions), errors);
        }
    }

    private static IEnumerable<string> Errors(SqliteQueueOptions options)
    {
        // The file settings are checked by the store's own validator, with the same rules.
        var store = ToStoreOptions(options);
        foreach (var error in SqliteStoreOptionsValidator.Errors(store))
        {
            yield return error.Replace("SqliteStoreOptions", "SqliteQueueOptions", StringComparison.Ordinal);
        }

        if (options.MaxMessageBytes < 0 || options.MaxMessageBytes > LargestBlob)
        {
            yield return $"SqliteQueueOptions.MaxMessageBytes {options.MaxMessageBytes} must be between 0 and {LargestBlob}.";
        }

        if (options.LeaseDuration < TimeSpan.FromMilliseconds(100) || options.LeaseDuration > TimeSpan.FromDays(1))
        {
            yield return $"SqliteQueueOptions.LeaseDuration {options.LeaseDuration} must be between 100 ms and one day.";
        }

        // A write waiting longer than this for the file's lock could outlast the lease it renews (issue 10).
        if (options.BusyTimeout > options.LeaseDuration / 3)
        {
            yield return $"SqliteQueueOptions.BusyTimeout {options.BusyTimeout} must be at most a third of LeaseDuration ({options.LeaseDuration}).";
        }

        if (options.PollInterval < TimeSpan.FromMilliseconds(10) || options.PollInterval > TimeSpan.FromMinutes(10))
        {
            yield return $"SqliteQueueOptions.PollInterval {options.PollInterval} must be between 10 ms and ten minutes.";
        }
    }

    /// <summary>The store settings for a file the queue opens itself.</summary>
    public static SqliteStoreOptions ToStoreOptions(SqliteQueueOptions options) => new()
    {
        ConnectionString = options.ConnectionString,
        Synchronous = options.Synchronous,
        BusyTimeout = options.BusyTimeout,
    };
}
