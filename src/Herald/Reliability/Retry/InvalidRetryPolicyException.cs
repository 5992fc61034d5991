namespace Herald.Reliability.Retry;

/// <summary>Thrown at configuration time when a retry policy is impossible; the message names every problem.</summary>
public sealed class InvalidRetryPolicyException : HeraldException
{
    /// <summary>Creates the exception for the policy's scope (such as "the global retry policy") and its problems.</summary>
    public InvalidRetryPolicyException(string scope, IReadOnlyList<string> problems)
        : base($"{scope} is invalid: {string.Join(" ", problems)}")
    {
        Scope = scope;
        Problems = problems;
    }

    /// <summary>Which policy: global, an endpoint's or a message type's.</summary>
    public string Scope { get; }

    /// <summary>Each problem, as a sentence naming the setting.</summary>
    public IReadOnlyList<string> Problems { get; }
}
