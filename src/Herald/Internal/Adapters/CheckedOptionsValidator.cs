using Microsoft.Extensions.Options;

namespace Herald.Internal;

/// <summary>Validates options when the host starts with an adapter's check, which lists every problem it finds.</summary>
internal sealed class CheckedOptionsValidator<TOptions>(Action<TOptions, OptionsProblems> check) : IValidateOptions<TOptions>
    where TOptions : class
{
    public ValidateOptionsResult Validate(string? name, TOptions options) => OptionsProblems.Of(options, check).ToResult();
}
