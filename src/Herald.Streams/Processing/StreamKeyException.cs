namespace Herald.Streams;

/// <summary>An input record that cannot be keyed (its key selector returned null); the processor dead-letters its event.</summary>
public sealed class StreamKeyException : HeraldException
{
    /// <summary>Creates the exception with the reason.</summary>
    public StreamKeyException(string message)
        : base(message)
    {
    }

    internal StreamKeyException(string message, string refusedBy)
        : base(message)
    {
        RefusedBy = refusedBy;
    }

    /// <summary>The operator that refused the key, which its message names.</summary>
    internal string? RefusedBy { get; }

    /// <summary>
    /// The operator <paramref name="error"/> comes from: the one that refused a key, else <paramref name="current"/>. An
    /// operator reads its key before it sets itself current, so the current one may still be the operator before it.
    /// </summary>
    internal static string Operator(Exception error, string current) => error is StreamKeyException { RefusedBy: { } refusedBy } ? refusedBy : current;

    /// <summary>A dead letter's reason for <paramref name="error"/> thrown in operator <paramref name="where"/>.</summary>
    internal static string Reason(Exception error, string where) =>
        error is StreamKeyException ? error.Message : $"'{where}' threw {error.GetType().Name}: {error.Message}";
}
