namespace Herald.Sagas;

/// <summary>
/// The checks every saga store makes before it reads or writes, so each engine refuses the same input the same way; for
/// implementers of <see cref="ISagaStore"/>.
/// </summary>
public static class SagaValidation
{
    /// <summary>The longest saga name or instance id, in characters; both are indexed keys.</summary>
    public const int MaxKeyLength = 200;

    /// <summary>Throws <see cref="ArgumentException"/> unless the saga name and id are non-blank and at most <see cref="MaxKeyLength"/> characters.</summary>
    public static void ValidateKey(string sagaType, string id)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(sagaType);
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        if (sagaType.Length > MaxKeyLength || id.Length > MaxKeyLength)
        {
            throw new ArgumentException($"A saga name and an instance id are at most {MaxKeyLength} characters.", sagaType.Length > MaxKeyLength ? nameof(sagaType) : nameof(id));
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> for an instance no store may save.</summary>
    public static void Validate(SagaInstance instance)
    {
        ArgumentNullException.ThrowIfNull(instance);
        ValidateKey(instance.SagaType, instance.Id);
        ArgumentOutOfRangeException.ThrowIfNegative(instance.Version, nameof(instance));
        ArgumentOutOfRangeException.ThrowIfNegative(instance.CurrentStep, nameof(instance));
        ArgumentNullException.ThrowIfNull(instance.CompletedSteps, nameof(instance));
        if (!Enum.IsDefined(instance.Status))
        {
            throw new ArgumentOutOfRangeException(nameof(instance), instance.Status, "Unknown saga status.");
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> for a query no store may run.</summary>
    public static void Validate(SagaQuery query)
    {
        ArgumentNullException.ThrowIfNull(query);
        if (query.Limit is < 1 or > 10_000)
        {
            throw new ArgumentOutOfRangeException(nameof(query), query.Limit, "A saga query returns 1 to 10,000 instances at a time.");
        }
    }
}
