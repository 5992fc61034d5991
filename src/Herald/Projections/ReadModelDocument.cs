namespace Herald.Projections;

/// <summary>One stored read-model document.</summary>
/// <param name="Id">Its id within its table.</param>
/// <param name="Json">Its JSON.</param>
public sealed record ReadModelDocument(string Id, string Json);
