using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.Options;

namespace Herald.Hosting;

/// <summary>Validates the reliability and projection options at start, naming every wrong setting.</summary>
internal sealed class ReliabilityOptionsValidator :
    IValidateOptions<DeadLetterOptions>,
    IValidateOptions<InboxOptions>,
    IValidateOptions<OutboxOptions>,
    IValidateOptions<IdempotencyOptions>,
    IValidateOptions<ProjectionOptions>
{
    public ValidateOptionsResult Validate(string? name, DeadLetterOptions options) => Result(options.Validate());

    public ValidateOptionsResult Validate(string? name, InboxOptions options) => Result(options.Validate());

    public ValidateOptionsResult Validate(string? name, OutboxOptions options) => Result(options.Validate());

    public ValidateOptionsResult Validate(string? name, IdempotencyOptions options) => Result(options.Validate());

    public ValidateOptionsResult Validate(string? name, ProjectionOptions options) => Result(options.Validate());

    private static ValidateOptionsResult Result(IEnumerable<string> problems)
    {
        var failures = problems.ToList();
        return failures.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(failures);
    }
}
