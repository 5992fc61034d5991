using Herald.Internal;
using Microsoft.Extensions.Options;

namespace Herald.Postgres.DependencyInjection;

/// <summary>Checks <see cref="PostgresStoreOptions"/> when the host starts.</summary>
internal sealed class PostgresStoreOptionsValidator : IValidateOptions<PostgresStoreOptions>
{
    public ValidateOptionsResult Validate(string? name, PostgresStoreOptions options)
    {
        try
        {
            options.Validate();
            return ValidateOptionsResult.Success;
        }
        catch (ArgumentException ex)
        {
            return ValidateOptionsResult.Fail(UserInfo.Redact(ex.Message)!);
        }
    }
}
