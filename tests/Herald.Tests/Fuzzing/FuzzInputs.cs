using System.Text;
using CsCheck;

namespace Herald.Tests.Fuzzing;

/// <summary>
/// Generators of hostile wire input shared by the fuzz suites (issue 10): message types, times, content types, header
/// maps and JSON bodies that are valid, truncated, of wrong types, huge, deeply nested, not UTF-8, out of range.
/// </summary>
internal static class FuzzInputs
{
    /// <summary>The message type the fuzzed host handles.</summary>
    public const string OrderType = "fuzz-order";

    /// <summary>A seed from HERALD_FUZZ_SEED to replay a failure (CsCheck prints the seed of a failing case).</summary>
    public static string? Seed => Environment.GetEnvironmentVariable("HERALD_FUZZ_SEED") is { Length: > 0 } seed ? seed : null;

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

    public static readonly Gen<DateTimeOffset> Time = Gen.OneOf(
        Gen.Const(default(DateTimeOffset)),
        Gen.Const(DateTimeOffset.MinValue),
        Gen.Const(DateTimeOffset.MaxValue),
        Gen.Const(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero)),
        Gen.Long[DateTimeOffset.MinValue.UtcTicks, DateTimeOffset.MaxValue.UtcTicks].Select(t => new DateTimeOffset(t, TimeSpan.Zero)));

    public static readonly Gen<string> ContentType = Gen.OneOf(
        Gen.Const("application/json"),
        Gen.Const("application/json"),
        Gen.Const("application/cloudevents+json; charset=utf-8"),
        Gen.Const(""),
        Gen.Const("text/plain"),
        Gen.Const("application/xml"),
        Gen.Const("application/json\r\nX-Injected: 1"),
        Gen.String[0, 30]);

    public static readonly Gen<Dictionary<string, string>> Headers =
        Gen.Dictionary(Gen.OneOf(Gen.String[0, 20], Gen.Const("traceparent"), Gen.Const("herald-first-failure"), Gen.Const("herald-dead-letter-reason")), Gen.String[0, 60])[0, 5];

    public static readonly Gen<byte[]> Body = Gen.OneOf(
        Gen.Int[1, 1000].Select(q => Json($$"""{"quantity":{{q}},"name":"n","at":"2030-01-01T00:00:00Z"}""")),
        Gen.Int[1, 1000].Select(q => Json($$"""{"quantity":{{q}},"name":"n","at":"2030-01-01T00:00:00Z"}""")),
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

    private static byte[] Json(string text) => Encoding.UTF8.GetBytes(text);
}
