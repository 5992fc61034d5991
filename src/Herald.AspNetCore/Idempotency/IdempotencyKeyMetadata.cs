namespace Herald.AspNetCore.Idempotency;

/// <summary>Endpoint metadata: the endpoint honours <c>Idempotency-Key</c> with these options.</summary>
internal sealed record IdempotencyKeyMetadata(IdempotencyKeyOptions Options);
