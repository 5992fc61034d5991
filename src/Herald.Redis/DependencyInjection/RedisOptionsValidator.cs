using Microsoft.Extensions.Options;

namespace Herald.Redis.DependencyInjection;

/// <summary>Checks <see cref="RedisOptions"/> when the host starts, naming every wrong setting.</summary>
internal sealed class RedisOptionsValidator : IValidateOptions<RedisOptions>
{
    public ValidateOptionsResult Validate(string? name, RedisOptions options)
    {
        var problems = options.Validate().ToList();
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
