using Herald.Postgres.Transport;
using Microsoft.Extensions.Options;

namespace Herald.Postgres.DependencyInjection;

/// <summary>Checks <see cref="PostgresQueueOptions"/> when the host starts.</summary>
internal sealed class PostgresQueueOptionsValidator : IValidateOptions<PostgresQueueOptions>
{
    public ValidateOptionsResult Validate(string? name, PostgresQueueOptions options)
    {
        try
        {
            options.Validate();
            return ValidateOptionsResult.Success;
        }
        catch (ArgumentException ex)
        {
            return ValidateOptionsResult.Fail(ex.Message);
        }
    }
}
