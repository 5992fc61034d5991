using System.Text;
using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.RabbitMQ.Transport;
using RabbitMQ.Client;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// Issue 10: generated AMQP properties and headers (CloudEvents attributes of every AMQP value kind, ids that are no Guid,
/// timestamps beyond the calendar, nested tables, invalid UTF-8) through the codec the consumer decodes with, and what
/// comes out through the real consuming chain (<see cref="FuzzPipeline"/>). It never throws: a delivery decodes, or
/// carries a decode failure with a reason and is dead-lettered once; every other one is handled once. The raw body always
/// survives for the dead letter. No broker needed: a pure function and an in-process chain.
/// </summary>
public sealed class AmqpDecodeFuzzTests(ITestOutputHelper output)
{
    private static readonly Gen<object?> HeaderValue = Gen.OneOf(
        Gen.Bool.Select(_ => (object?)null),
        Gen.String[0, 40].Select(s => (object?)s),
        Gen.String[0, 40].Select(s => (object?)Encoding.UTF8.GetBytes(s)),
        Gen.Byte.Array[0, 40].Select(b => (object?)b),
        Gen.Int.Select(i => (object?)i),
        Gen.Long.Select(l => (object?)l),
        Gen.Bool.Select(b => (object?)b),
        Gen.Double.Select(d => (object?)d),
        Gen.Long.Select(l => (object?)new AmqpTimestamp(l)),
        Gen.Bool.Select(_ => (object?)new Dictionary<string, object?> { ["nested"] = new List<object?> { 1, "x", null } }),
        Gen.Bool.Select(_ => (object?)new List<object?> { "a", 2 }),
        Gen.Bool.Select(_ => (object?)decimal.MaxValue),
        Gen.Guid.Select(g => (object?)Encoding.UTF8.GetBytes(g.ToString())),
        Gen.Bool.Select(_ => (object?)Encoding.UTF8.GetBytes("2030-01-01T00:00:00.000Z")),
        Gen.Bool.Select(_ => (object?)Encoding.UTF8.GetBytes("99999-01-01T00:00:00Z")),
        Gen.Bool.Select(_ => (object?)Encoding.UTF8.GetBytes("urn:herald:schema:t:2147483648")));

    private static readonly Gen<string> HeaderName = Gen.OneOf(
        Gen.OneOf(
            new[] { "id", "type", "time", "source", "specversion", "dataschema", "correlationid", "causationid", "userid", "partitionkey", "datacontenttype", "traceparent" }
                .Select(a => Gen.Const("cloudEvents:" + a)).ToArray()),
        Gen.Const("x-delivery-count"),
        Gen.Const("x-death"),
        Gen.Const("x-herald-attempts"),
        Gen.String[0, 20]);

    [Fact]
    public async Task GeneratedProperties_NeverMakeDecodingThrow_AndAFailureAlwaysCarriesItsReasonAndTheBody_Issue10()
    {
        await using var pipeline = await FuzzPipeline.StartAsync();
        var gen =
            from headers in Gen.Dictionary(HeaderName, HeaderValue)[0, 8]
            from messageId in Gen.OneOf(Gen.Bool.Select(_ => (string?)null), Gen.Guid.Select(g => (string?)g.ToString()), Gen.String[0, 40].Select(s => (string?)s))
            from type in Gen.OneOf(Gen.Bool.Select(_ => (string?)null), Gen.Bool.Select(_ => (string?)"fuzz-order"), Gen.String[0, 30].Select(s => (string?)s))
            from timestamp in Gen.OneOf(Gen.Bool.Select(_ => (long?)null), Gen.Long.Select(l => (long?)l), Gen.Bool.Select(_ => (long?)9_000_000_000_000_000))
            from contentType in Gen.OneOf(Gen.Bool.Select(_ => (string?)null), Gen.Bool.Select(_ => (string?)"application/json"), Gen.String[0, 20].Select(s => (string?)s))
            from appId in Gen.OneOf(Gen.Bool.Select(_ => (string?)null), Gen.Bool.Select(_ => (string?)"/herald"), Gen.String[0, 30].Select(s => (string?)s))
            from body in Gen.OneOf(Gen.Byte.Array[0, 300], FuzzInputs.Body)
            from redelivered in Gen.Bool
            from raw in Gen.Bool
            select (headers, messageId, type, timestamp, contentType, appId, body, redelivered, raw);

        var cases = await Fuzz.RunAsync(
            gen,
            async sample =>
            {
                var properties = new BasicProperties
                {
                    Headers = sample.headers.Count == 0 ? null : sample.headers,
                    MessageId = sample.messageId,
                    Type = sample.type,
                    ContentType = sample.contentType,
                    AppId = sample.appId,
                };
                if (sample.timestamp is { } ts)
                {
                    properties.Timestamp = new AmqpTimestamp(ts);
                }

                var envelope = AmqpEnvelopeCodec.Decode(properties, sample.body, sample.redelivered, sample.raw ? "fuzz-order" : null, "/herald", TimeProvider.System, out var failure);

                Assert.True(envelope.Body.Span.SequenceEqual(sample.body), "the body is kept as it came");
                await pipeline.DeliverDecodedAsync(envelope, failure);
            },
            output.WriteLine);

        pipeline.AssertRun(cases, output.WriteLine);
    }
}
