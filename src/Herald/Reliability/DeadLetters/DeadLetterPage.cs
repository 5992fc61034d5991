namespace Herald.Reliability.DeadLetters;

/// <summary>One page of dead letters and the continuation to the next page.</summary>
/// <param name="Items">The dead letters of this page, in id order.</param>
/// <param name="Next">The query for the next page, or null when this page is the last.</param>
public sealed record DeadLetterPage(IReadOnlyList<DeadLetter> Items, DeadLetterQuery? Next);
