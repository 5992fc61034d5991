namespace Herald.Cqrs;

/// <summary>The result of a command that returns nothing, so one pipeline shape serves every request.</summary>
public readonly record struct Unit
{
    /// <summary>The one value.</summary>
    public static Unit Value => default;
}
