namespace Herald.Cqrs.Validation;

/// <summary>One problem with a request.</summary>
/// <param name="Property">The member at fault (empty for the request as a whole).</param>
/// <param name="Message">What is wrong, for a person to read.</param>
public sealed record ValidationError(string Property, string Message);
