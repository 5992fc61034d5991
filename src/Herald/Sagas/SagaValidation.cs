namespace Herald.Sagas;

/// <summary>
/// The checks every saga store makes before it reads or writes, so each engine refuses the same input the same way; for
/// implementers of <see cref="ISagaStore"/>.
/// </summary>
public static class SagaValidation
{
    /// <summary>The longest saga name or instance id, in characters; both are indexed keys.</summary>
    public const int MaxKeyLength = 200;

    /// <summary>
    /// Throws <see cref="ArgumentException"/> unless the saga name and id are non-blank, at most <see cref="MaxKeyLength"/>
    /// characters, and hold no half of a surrogate pair (which SQLite would store as U+FFFD, one key for every id cut
    /// the same way, and PostgreSQL's client cannot encode).
    /// </summary>
    public static void ValidateKey(string sagaType, string id)
    {
        ValidateKeyShape(sagaType, id);
        EventSourcing.StreamName.ThrowIfHoldsUnpairedSurrogate(sagaType, "saga name", nameof(sagaType));
        EventSourcing.StreamName.ThrowIfHoldsUnpairedSurrogate(id, "saga instance id", nameof(id));
    }

    /// <summary>
    /// For a lookup (load, delete): throws as <see cref="ValidateKey"/> does for a blank or over-long name or id, and returns
    /// false when no instance can be stored under them (they hold half of a surrogate pair), so the lookup finds none.
    /// </summary>
    public static bool CanBeStored(string sagaType, string id)
    {
        ValidateKeyShape(sagaType, id);
        return !EventSourcing.StreamName.HoldsUnpairedSurrogate(sagaType) && !EventSourcing.StreamName.HoldsUnpairedSurrogate(id);
    }

    private static void ValidateKeyShape(string sagaType, string id)
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

        // No instance has such a key (saves refuse it), and SQLite would match it as U+FFFD.
        EventSourcing.StreamName.ThrowIfHoldsUnpairedSurrogate(query.SagaType, "saga name", nameof(query));
        EventSourcing.StreamName.ThrowIfHoldsUnpairedSurrogate(query.After?.SagaType, "saga name to list after", nameof(query));
        EventSourcing.StreamName.ThrowIfHoldsUnpairedSurrogate(query.After?.Id, "saga instance id to list after", nameof(query));
    }
}
