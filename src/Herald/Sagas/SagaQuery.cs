namespace Herald.Sagas;

/// <summary>Which saga instances to list: by saga name and status, a page at a time in id order.</summary>
public sealed record SagaQuery
{
    /// <summary>Only instances of this saga; null for every saga.</summary>
    public string? SagaType { get; init; }

    /// <summary>Only instances in one of these statuses; null or empty for any status.</summary>
    public IReadOnlyCollection<SagaStatus>? Statuses { get; init; }

    /// <summary>Only instances whose (saga name, id) comes after this one's, for paging; null to start at the first.</summary>
    public (string SagaType, string Id)? After { get; init; }

    /// <summary>The most instances to return (1 to 10,000).</summary>
    public int Limit { get; init; } = 100;

    /// <summary>The instances left running or compensating, which a start-up resumes.</summary>
    public static SagaQuery Unfinished(int limit = 100) => new() { Statuses = [SagaStatus.Running, SagaStatus.Compensating], Limit = limit };

    internal bool Matches(SagaInstance instance) =>
        (SagaType is null || string.Equals(SagaType, instance.SagaType, StringComparison.Ordinal))
        && (Statuses is null || Statuses.Count == 0 || Statuses.Contains(instance.Status))
        && (After is not { } after || SagaKeyComparer.Instance.Compare((instance.SagaType, instance.Id), after) > 0);
}

/// <summary>
/// Orders instances by saga name, then id, by code point, as every store pages them (SQLite's UTF-8 bytes, PostgreSQL's
/// <c>COLLATE "C"</c>); UTF-16 ordinal order differs above U+FFFF.
/// </summary>
internal sealed class SagaKeyComparer : IComparer<(string SagaType, string Id)>
{
    public static SagaKeyComparer Instance { get; } = new();

    public int Compare((string SagaType, string Id) x, (string SagaType, string Id) y)
    {
        var byType = Projections.CodePointOrder.Instance.Compare(x.SagaType, y.SagaType);
        return byType != 0 ? byType : Projections.CodePointOrder.Instance.Compare(x.Id, y.Id);
    }
}
