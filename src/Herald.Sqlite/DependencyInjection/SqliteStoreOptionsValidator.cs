using Herald.Internal;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Options;

namespace Herald.Sqlite.DependencyInjection;

/// <summary>Checks <see cref="SqliteStoreOptions"/> at start, so a bad setting fails the host instead of the first write.</summary>
internal sealed class SqliteStoreOptionsValidator : IValidateOptions<SqliteStoreOptions>
{
    // SQLite refuses values longer than its SQLITE_MAX_LENGTH (1,000,000,000 bytes in the bundled build).
    private const int LargestBlob = 1_000_000_000;

    public ValidateOptionsResult Validate(string? name, SqliteStoreOptions options)
    {
        var errors = Errors(options).ToList();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Throws <see cref="OptionsValidationException"/> listing every problem.</summary>
    public static void ThrowIfInvalid(SqliteStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var errors = Errors(options).ToList();
        if (errors.Count > 0)
        {
            throw new OptionsValidationException(Options.DefaultName, typeof(SqliteStoreOptions), errors);
        }
    }

    internal static IEnumerable<string> Errors(SqliteStoreOptions options)
    {
        if (string.IsNullOrWhiteSpace(options.ConnectionString))
        {
            yield return "SqliteStoreOptions.ConnectionString is empty; give the file path, e.g. UseSqlite(\"herald.db\").";
        }
        else
        {
            string? problem = null;
            try
            {
                var builder = SqliteConnections.Parse(options.ConnectionString);
                if (string.IsNullOrWhiteSpace(builder.DataSource))
                {
                    problem = "SqliteStoreOptions.ConnectionString names no file (Data Source).";
                }
                else if (builder.Mode == SqliteOpenMode.Memory || builder.DataSource.Trim() == ":memory:")
                {
                    problem = "SqliteStoreOptions.ConnectionString names an in-memory database; each connection would see its own. Use a file, or InMemoryEventStore.";
                }
                else if (builder.Mode == SqliteOpenMode.ReadOnly)
                {
                    problem = "SqliteStoreOptions.ConnectionString opens the file read-only; the store writes to it.";
                }
            }
            catch (ArgumentException ex)
            {
                problem = $"SqliteStoreOptions.ConnectionString is not a valid connection string: {UserInfo.Redact(ex.Message)}";
            }

            if (problem is not null)
            {
                yield return problem;
            }
        }

        if (!Enum.IsDefined(options.Synchronous))
        {
            yield return $"SqliteStoreOptions.Synchronous {options.Synchronous} is not a mode; use Full or Normal.";
        }

        if (options.BusyTimeout < TimeSpan.Zero || options.BusyTimeout > TimeSpan.FromDays(1))
        {
            yield return $"SqliteStoreOptions.BusyTimeout {options.BusyTimeout} must be between zero and one day.";
        }

        if (options.MaxEventBytes < 1 || options.MaxEventBytes > LargestBlob)
        {
            yield return $"SqliteStoreOptions.MaxEventBytes {options.MaxEventBytes} must be between 1 and {LargestBlob}.";
        }

        if (options.MaxWritesPerTransaction < 1)
        {
            yield return $"SqliteStoreOptions.MaxWritesPerTransaction {options.MaxWritesPerTransaction} must be at least 1.";
        }

        if (options.GroupCommitDelay < TimeSpan.Zero || options.GroupCommitDelay > TimeSpan.FromSeconds(1))
        {
            yield return $"SqliteStoreOptions.GroupCommitDelay {options.GroupCommitDelay} must be between zero and one second.";
        }

        if (options.WriteQueueCapacity < 1)
        {
            yield return $"SqliteStoreOptions.WriteQueueCapacity {options.WriteQueueCapacity} must be at least 1.";
        }

        if (options.ExternalWritesCheckInterval <= TimeSpan.Zero || options.ExternalWritesCheckInterval > TimeSpan.FromMinutes(10))
        {
            yield return $"SqliteStoreOptions.ExternalWritesCheckInterval {options.ExternalWritesCheckInterval} must be above zero and at most ten minutes.";
        }

        if (options.ReaderPoolSize < 0)
        {
            yield return $"SqliteStoreOptions.ReaderPoolSize {options.ReaderPoolSize} must not be negative.";
        }
    }
}
