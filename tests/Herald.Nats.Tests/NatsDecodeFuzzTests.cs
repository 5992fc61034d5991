using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.Nats.Transport;
using Microsoft.Extensions.Primitives;
using NATS.Client.Core;
using Xunit.Abstractions;

namespace Herald.Nats.Tests;

/// <summary>
/// Issue 10: generated NATS headers (CloudEvents attributes in any case, ids that are no Guid, times beyond the calendar,
/// percent-encoding that is broken or decodes to invalid UTF-8, several values per header, empty values, delays past any
/// limit) and bodies, through what the consumer runs on each message (<see cref="NatsEnvelopeCodec.NotBefore"/>, then
/// <see cref="NatsEnvelopeCodec.Decode"/>), and what comes out through the real consuming chain (<see cref="FuzzPipeline"/>).
/// Decoding never throws: a message decodes to a valid envelope, or carries a declared decode failure with its reason and
/// is dead-lettered once; every other one is handled once. No server needed: a pure function and an in-process chain.
/// </summary>
public sealed class NatsDecodeFuzzTests(ITestOutputHelper output)
{
    private static readonly Gen<string> Value = Gen.OneOf(
        FuzzInputs.IdText,
        FuzzInputs.TimeText,
        FuzzInputs.MessageType,
        FuzzInputs.ContentType,
        Gen.Const("1.0"),
        Gen.Const("%"),
        Gen.Const("%zz"),
        Gen.Const("%FF%FE%C0%80"),
        Gen.Const("%C3%28"),
        Gen.Const("%ED%A0%80"),
        Gen.Const("urn:herald:schema:fuzz-order:2147483648"),
        Gen.Const("urn:herald:schema:fuzz-order:-1"),
        Gen.Const(new string('%', 3000)),
        Gen.String[0, 40]);

    private static readonly Gen<string> Name = Gen.OneOf(
        Gen.OneOf(
            new[] { "id", "type", "time", "source", "specversion", "dataschema", "correlationid", "causationid", "userid", "partitionkey", "datacontenttype", "deliveryattempt" }
                .Select(a => Gen.OneOf(Gen.Const("ce-" + a), Gen.Const("CE-" + a.ToUpperInvariant()))).ToArray()),
        Gen.Const(NatsEnvelopeCodec.ContentTypeHeader),
        Gen.Const(NatsEnvelopeCodec.MessageIdHeader),
        Gen.Const(NatsEnvelopeCodec.NotBeforeHeader),
        Gen.Const(NatsEnvelopeCodec.AttemptHeader),
        Gen.Const("ce-"),
        Gen.String[0, 20]);

    private static readonly Gen<StringValues> Values = Gen.OneOf(
        Value.Select(v => new StringValues(v)),
        Value.Select(v => new StringValues(v)),
        Gen.Const(StringValues.Empty),
        Gen.Const(new StringValues([null])),
        Value.Array[2, 3].Select(v => new StringValues(v)));

    private static readonly Gen<NatsHeaders?> Headers = Gen.OneOf(
        Gen.Const((NatsHeaders?)null),
        Gen.Dictionary(Name, Values)[0, 10].Select(entries => (NatsHeaders?)new NatsHeaders(entries)),
        Gen.Select(FuzzInputs.IdText, FuzzInputs.MessageType, FuzzInputs.TimeText, FuzzInputs.ContentType, (id, type, time, contentType) => (NatsHeaders?)new NatsHeaders
        {
            ["ce-specversion"] = "1.0",
            ["ce-id"] = id,
            ["ce-type"] = NatsEnvelopeCodec.Escape(type),
            ["ce-time"] = time,
            [NatsEnvelopeCodec.ContentTypeHeader] = contentType,
        }),
        Gen.Select(Gen.Guid, FuzzInputs.ValidBody, (id, _) => (NatsHeaders?)new NatsHeaders
        {
            ["ce-specversion"] = "1.0",
            ["ce-id"] = id.ToString(),
            ["ce-type"] = FuzzInputs.OrderType,
            ["ce-time"] = "2030-01-01T00:00:00.000Z",
        }));

    [Fact]
    public async Task GeneratedHeadersAndBodies_NeverMakeDecodingThrow_AndEachIsHandledOrDeadLetteredWithAReason_Issue10()
    {
        await using var pipeline = await FuzzPipeline.StartAsync();
        var gen =
            from headers in Headers
            from body in FuzzInputs.Body
            from attempt in Gen.OneOf(Gen.Int[1, 5], Gen.Const(int.MaxValue))
            from stored in FuzzInputs.Time
            from raw in Gen.Frequency((4, Gen.Const(false)), (1, Gen.Const(true)))
            select (headers, body, attempt, stored, raw);

        var cases = await Fuzz.RunAsync(
            gen,
            async sample =>
            {
                // What the consumer reads before decoding: a due time that is no time is no delay.
                _ = NatsEnvelopeCodec.NotBefore(sample.headers);

                var envelope = NatsEnvelopeCodec.Decode(
                    sample.headers, sample.body, sample.attempt, sample.stored, sample.raw ? FuzzInputs.OrderType : null, "/herald", TimeProvider.System, out var failure);

                Assert.True(envelope.Body.Span.SequenceEqual(sample.body), "the body is kept as it came");
                await pipeline.DeliverDecodedAsync(envelope, failure);
            },
            output.WriteLine);

        pipeline.AssertRun(cases, output.WriteLine);
    }
}
