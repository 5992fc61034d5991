using System.Text;
using CsCheck;

namespace Herald.Conformance.Fuzzing;

/// <summary>
/// Generators of hostile wire input shared by the fuzz suites of every transport (issue 10): message types, ids, times,
/// content types, header maps and JSON bodies that are valid, truncated, of wrong types, huge, deeply nested, not UTF-8,
/// out of range.
/// </summary>
public static class FuzzInputs
{
    /// <summary>The message type <see cref="FuzzPipeline"/> handles.</summary>
    public const string OrderType = "fuzz-order";

    /// <summary>A valid body of <see cref="OrderType"/>: <see cref="FuzzPipeline"/>'s handler takes it.</summary>
    public static readonly Gen<byte[]> ValidBody = Gen.Int[1, 1000].Select(q => Json($$"""{"quantity":{{q}},"name":"n","at":"2030-01-01T00:00:00Z"}"""));

    /// <summary>Message types: the handled one, empty, blank, a CLR type name, a path, a NUL, 5000 characters, anything.</summary>
    public static readonly Gen<string> MessageType = Gen.OneOf(
        Gen.Const(OrderType),
        Gen.Const(OrderType),
        Gen.Const(""),
        Gen.Const("   "),
        Gen.Const("System.Diagnostics.Process, System.Diagnostics.Process"),
        Gen.Const("../../etc/passwd"),
        Gen.Const(OrderType + "\0"),
        Gen.Const(new string('t', 5000)),
        Gen.String[0, 40]);

    /// <summary>Message ids as text: a Guid in its forms, empty, not a Guid, over-long, with a NUL.</summary>
    public static readonly Gen<string> IdText = Gen.OneOf(
        Gen.Guid.Select(g => g.ToString("D")),
        Gen.Guid.Select(g => g.ToString("D")),
        Gen.Guid.Select(g => g.ToString("N")),
        Gen.Guid.Select(g => g.ToString("B")),
        Gen.Const(Guid.Empty.ToString()),
        Gen.Const(""),
        Gen.Const("not-a-guid"),
        Gen.Guid.Select(g => g + "\0"),
        Gen.Const(new string('1', 10_000)),
        Gen.String[0, 40]);

    /// <summary>Times: the default, both ends of the calendar, a plain one, any tick.</summary>
    public static readonly Gen<DateTimeOffset> Time = Gen.OneOf(
        Gen.Const(default(DateTimeOffset)),
        Gen.Const(DateTimeOffset.MinValue),
        Gen.Const(DateTimeOffset.MaxValue),
        Gen.Const(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero)),
        Gen.Long[DateTimeOffset.MinValue.UtcTicks, DateTimeOffset.MaxValue.UtcTicks].Select(t => new DateTimeOffset(t, TimeSpan.Zero)));

    /// <summary>Times as wire text: RFC 3339 in range, the ends of the calendar, past them, impossible dates, numbers, anything.</summary>
    public static readonly Gen<string> TimeText = Gen.OneOf(
        Gen.Const("2030-01-01T00:00:00.000Z"),
        Gen.Const("2030-01-01T00:00:00.000Z"),
        Gen.Const("2030-01-01T00:00:00+14:00"),
        Gen.Const("0001-01-01T00:00:00Z"),
        Gen.Const("9999-12-31T23:59:59.9999999Z"),
        Gen.Const("9999-12-31T23:59:59-14:00"),
        Gen.Const("0001-01-01T00:00:00+14:00"),
        Gen.Const("99999-01-01T00:00:00Z"),
        Gen.Const("2031-02-31T25:61:61Z"),
        Gen.Const("-0001-01-01T00:00:00Z"),
        Gen.Const("1e400"),
        Gen.Const("9223372036854775807"),
        Gen.Const(""),
        Time.Select(t => t.ToString("O", System.Globalization.CultureInfo.InvariantCulture)),
        Gen.String[0, 30]);

    /// <summary>Content types: JSON in its forms, empty, not JSON, a header injection, anything.</summary>
    public static readonly Gen<string> ContentType = Gen.OneOf(
        Gen.Const("application/json"),
        Gen.Const("application/json"),
        Gen.Const("application/cloudevents+json; charset=utf-8"),
        Gen.Const(""),
        Gen.Const("text/plain"),
        Gen.Const("application/xml"),
        Gen.Const("application/json\r\nX-Injected: 1"),
        Gen.String[0, 30]);

    /// <summary>Header maps of up to five entries, with names Herald itself reads among random ones.</summary>
    public static readonly Gen<Dictionary<string, string>> Headers =
        Gen.Dictionary(Gen.OneOf(Gen.String[0, 20], Gen.Const("traceparent"), Gen.Const("herald-first-failure"), Gen.Const("herald-dead-letter-reason")), Gen.String[0, 60])[0, 5];

    /// <summary>
    /// Bodies that no JSON object deserializer accepts: truncated, of the wrong JSON kind, too deep, not UTF-8, empty, with
    /// values out of range or of the wrong type for <see cref="OrderType"/>, or over any receive limit a test sets below 300 kB.
    /// </summary>
    public static readonly Gen<byte[]> PoisonBody = Gen.OneOf(
        Gen.Int[1, 50].Select(cut => Json("""{"quantity":5,"name":"n","at":"2030-01-01T00:00:00Z"}""")[..cut]),
        Gen.Const(Json("""{"quantity":"five","name":7,"at":true}""")),
        Gen.Const(Json("""{"quantity":1e400,"name":"n"}""")),
        Gen.Const(Json("""{"quantity":2147483648,"name":"n"}""")),
        Gen.Const(Json("""{"quantity":1,"name":"n","at":"99999-99-99T99:99:99Z"}""")),
        Gen.Const(Json("[1,2,3]")),
        Gen.Const(Json("\"text\"")),
        Gen.Const(Json("")),
        Gen.Int[100, 10_000].Select(depth => Json(new string('[', depth) + new string(']', depth))),
        Gen.Int[100, 5_000].Select(depth => Json(string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth))),
        Gen.Const(Json($$"""{"quantity":1,"name":"{{new string('x', 300_000)}}"}""")),
        Gen.Const(new byte[] { 0x7B, 0x22, 0x6E, 0x22, 0x3A, 0x22, 0xFF, 0xFE, 0xC0, 0x80, 0x22, 0x7D }),
        Gen.Byte.Array[1, 200].Select(b => (byte[])[0xFF, .. b]));

    /// <summary>Bodies of every kind: valid ones of <see cref="OrderType"/>, a negative quantity its constructor refuses, and <see cref="PoisonBody"/>.</summary>
    public static readonly Gen<byte[]> Body = Gen.OneOf(
        ValidBody,
        ValidBody,
        Gen.Int[-1000, 0].Select(q => Json($$"""{"quantity":{{q}},"name":"n","at":"2030-01-01T00:00:00Z"}""")),
        Gen.Int[1, 50].Select(cut => Json("""{"quantity":5,"name":"n","at":"2030-01-01T00:00:00Z"}""")[..cut]),
        Gen.Const(Json("""{"quantity":"five","name":7,"at":true}""")),
        Gen.Const(Json("""{"quantity":1e400,"name":"n"}""")),
        Gen.Const(Json("""{"quantity":2147483648,"name":"n"}""")),
        Gen.Const(Json("""{"quantity":1,"name":"n","at":"99999-99-99T99:99:99Z"}""")),
        Gen.Const(Json("""{"quantity":1,"name":"n","at":"0000-01-01T00:00:00Z"}""")),
        Gen.Const(Json("[1,2,3]")),
        Gen.Const(Json("null")),
        Gen.Const(Json("")),
        Gen.Int[100, 10_000].Select(depth => Json(new string('[', depth) + new string(']', depth))),
        Gen.Int[100, 5_000].Select(depth => Json(string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth))),
        Gen.Const(Json($$"""{"quantity":1,"name":"{{new string('x', 300_000)}}"}""")),
        Gen.Const(new byte[] { 0x7B, 0x22, 0x6E, 0x22, 0x3A, 0x22, 0xFF, 0xFE, 0xC0, 0x80, 0x22, 0x7D }),
        Gen.Byte.Array[0, 200]);

    /// <summary>Raw bytes for a header value or a column that may hold any: UTF-8 text, invalid UTF-8, empty, large.</summary>
    public static readonly Gen<byte[]> Bytes = Gen.OneOf(
        Gen.String[0, 40].Select(Json),
        Gen.Byte.Array[0, 40],
        Gen.Const(new byte[] { 0xFF, 0xFE, 0xC0, 0x80 }),
        Gen.Const(new byte[] { 0xED, 0xA0, 0x80 }),
        Gen.Const(Array.Empty<byte>()),
        Gen.Const(new byte[20_000]));

    /// <summary>The UTF-8 bytes of <paramref name="text"/>.</summary>
    public static byte[] Json(string text) => Encoding.UTF8.GetBytes(text);
}
