namespace Herald.AspNetCore.Idempotency;

/// <summary>The request's idempotency key, scoped (route and user) and hashed as the store keeps it; set while the endpoint runs.</summary>
internal sealed class IdempotencyKeyFeature(string scopedKey)
{
    public string ScopedKey { get; } = scopedKey;
}
