namespace Herald.AspNetCore.Guards;

/// <summary>Endpoint metadata: the body must be JSON and at most this long (null: <see cref="HeraldHttpOptions.MaxRequestBodyBytes"/>).</summary>
internal sealed record JsonBodyMetadata(long? MaxBodyBytes);
