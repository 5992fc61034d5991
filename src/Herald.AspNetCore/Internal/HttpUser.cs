using System.Security.Claims;

namespace Herald.AspNetCore.Internal;

/// <summary>Who made a request, one rule for every place that says so: the events' <c>UserId</c> and the Idempotency-Key scope.</summary>
internal static class HttpUser
{
    /// <summary>
    /// The authenticated user's name, or, without a name claim (an API client's bearer token), its <c>NameIdentifier</c> or
    /// <c>sub</c> claim (<paramref name="bySubject"/> true); null when the request is anonymous or names no one.
    /// </summary>
    public static string? Id(ClaimsPrincipal principal, out bool bySubject)
    {
        bySubject = false;
        if (principal.Identity is not { IsAuthenticated: true } identity)
        {
            return null;
        }

        if (identity.Name is { Length: > 0 } name)
        {
            return name;
        }

        if ((principal.FindFirst(ClaimTypes.NameIdentifier) ?? principal.FindFirst("sub")) is { Value.Length: > 0 } subject)
        {
            bySubject = true;
            return subject.Value;
        }

        return null;
    }
}
