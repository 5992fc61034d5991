namespace Herald.AspNetCore.Correlation;

/// <summary>The correlation id of the request, set by the correlation middleware (or made on first use without it).</summary>
internal sealed class CorrelationFeature(string correlationId)
{
    public string CorrelationId { get; } = correlationId;
}
