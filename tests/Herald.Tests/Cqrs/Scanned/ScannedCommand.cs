using Herald.Cqrs;
using Herald.Cqrs.Validation;

namespace Herald.Tests.Cqrs.Scanned;

public sealed record ScannedCommand(int Value) : ICommand<int>;

public sealed class ScannedCommandHandler : ICommandHandler<ScannedCommand, int>
{
    public ValueTask<int> HandleAsync(ScannedCommand command, CancellationToken cancellationToken) => ValueTask.FromResult(command.Value);
}

public sealed class ScannedCommandValidator : IValidator<ScannedCommand>
{
    public IEnumerable<ValidationError> Validate(ScannedCommand instance) =>
        instance.Value < 0 ? [new ValidationError(nameof(ScannedCommand.Value), "must not be negative")] : [];
}
