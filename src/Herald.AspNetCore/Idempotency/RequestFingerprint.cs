using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;

namespace Herald.AspNetCore.Idempotency;

/// <summary>
/// What tells one request of an idempotency key from another: the SHA-256 of its method, target, body and media type
/// (<see cref="Full"/>), and the same without the media type (<see cref="WithoutMediaType"/>), which is all a response stored
/// by an earlier version was fingerprinted with.
/// </summary>
internal readonly record struct RequestFingerprint(string WithoutMediaType, string Full)
{
    /// <summary>
    /// Finishes <paramref name="hash"/>, fed the method, target and body: the media type goes last, followed by its length,
    /// so the fingerprint without it is the hash so far, and no body and media type add up to another's.
    /// </summary>
    public static RequestFingerprint Of(IncrementalHash hash, string? contentType)
    {
        Span<byte> digest = stackalloc byte[32];
        hash.GetCurrentHash(digest);
        var withoutMediaType = Convert.ToHexStringLower(digest);
        var media = Encoding.UTF8.GetBytes(MediaType(contentType));
        hash.AppendData(media);
        Span<byte> length = stackalloc byte[sizeof(int)];
        BinaryPrimitives.WriteInt32BigEndian(length, media.Length);
        hash.AppendData(length);
        hash.GetHashAndReset(digest);
        return new RequestFingerprint(withoutMediaType, Convert.ToHexStringLower(digest));
    }

    /// <summary>Whether <paramref name="stored"/> is this request's response; one an earlier version stored is matched without the media type, as it was then.</summary>
    public bool Matches(StoredResponse stored) => stored.FullFingerprint is { } full
        ? string.Equals(full, Full, StringComparison.Ordinal)
        : string.Equals(stored.Fingerprint, WithoutMediaType, StringComparison.Ordinal);

    // One spelling per media type (RFC 9110 §8.3.1): type, subtype, parameter names and the charset are case-insensitive, a
    // quoted value is its unquoted one, and the order of parameters does not matter. A value that does not parse is taken as
    // sent, after a space no parsed one begins with.
    private static string MediaType(string? contentType)
    {
        if (string.IsNullOrWhiteSpace(contentType))
        {
            return "";
        }

        if (!MediaTypeHeaderValue.TryParse(contentType, out var parsed) || parsed.MediaType.Value is not { } type)
        {
            return " " + contentType.Trim();
        }

        var builder = new StringBuilder(contentType.Length).Append(type.ToLowerInvariant());
        var parameters = parsed.Parameters
            .Select(p =>
            {
                var name = p.Name.Value?.ToLowerInvariant() ?? "";
                var value = HeaderUtilities.UnescapeAsQuotedString(p.Value).Value ?? "";
                return (Name: name, Value: name == "charset" ? value.ToLowerInvariant() : value);
            })
            .OrderBy(p => p.Name, StringComparer.Ordinal)
            .ThenBy(p => p.Value, StringComparer.Ordinal);
        foreach (var (name, value) in parameters)
        {
            builder.Append(CultureInfo.InvariantCulture, $";{name}={value}");
        }

        return builder.ToString();
    }
}
