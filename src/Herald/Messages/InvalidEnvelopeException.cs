namespace Herald.Messages;

/// <summary>Thrown for an envelope that lacks a required field; such a message goes to the dead letters at once.</summary>
public sealed class InvalidEnvelopeException : HeraldException
{
    /// <summary>Creates the exception listing every problem of the envelope.</summary>
    public InvalidEnvelopeException(IReadOnlyList<string> problems)
        : base("The envelope is invalid: " + string.Join(" ", problems))
    {
        Problems = problems;
    }

    /// <summary>Each missing or invalid field, as a sentence.</summary>
    public IReadOnlyList<string> Problems { get; }

    /// <summary>The problems of an envelope: an empty message id or message type, a missing time, a schema version below 1; empty when it is valid.</summary>
    public static IReadOnlyList<string> Check(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (envelope.MessageId != Guid.Empty && !string.IsNullOrWhiteSpace(envelope.MessageType) && envelope.Time != default && envelope.SchemaVersion >= 1)
        {
            return [];
        }

        var problems = new List<string>();
        if (envelope.MessageId == Guid.Empty)
        {
            problems.Add("MessageId is empty.");
        }

        if (string.IsNullOrWhiteSpace(envelope.MessageType))
        {
            problems.Add("MessageType is empty.");
        }

        if (envelope.Time == default)
        {
            problems.Add("Time is missing.");
        }

        if (envelope.SchemaVersion < 1)
        {
            problems.Add($"SchemaVersion must be 1 or more, not {envelope.SchemaVersion}.");
        }

        return problems;
    }
}
