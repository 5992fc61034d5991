namespace Herald.Messages;

/// <summary>Content types Herald writes into <see cref="Envelope.ContentType"/>.</summary>
public static class ContentTypes
{
    /// <summary>JSON, the default body encoding.</summary>
    public const string Json = "application/json";
}
