using System.Text;
using Confluent.Kafka;
using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.Kafka.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// Issue 10: generated Kafka records (CloudEvents headers whose values are any bytes, invalid UTF-8 included, ids that are
/// no Guid, times beyond the calendar, repeated and empty headers, null values, attempt counts past int, keys that are no
/// text, tombstones) through what the consumer runs on each record (<see cref="KafkaEnvelopeCodec.Decode"/>, the attempt
/// count) and what comes out through the real consuming chain (<see cref="FuzzPipeline"/>). Decoding never throws: a record
/// decodes to a valid envelope, or carries a declared decode failure with its reason and is dead-lettered once; every other
/// one is handled once. No broker needed: a pure function and an in-process chain.
/// </summary>
public sealed class KafkaDecodeFuzzTests(ITestOutputHelper output)
{
    private static readonly Gen<byte[]?> Value = Gen.OneOf(
        FuzzInputs.IdText.Select(Utf8),
        FuzzInputs.TimeText.Select(Utf8),
        FuzzInputs.MessageType.Select(Utf8),
        FuzzInputs.ContentType.Select(Utf8),
        FuzzInputs.Bytes.Select(b => (byte[]?)b),
        Gen.Const((byte[]?)null),
        Gen.Const(Utf8("2147483648")),
        Gen.Const(Utf8("-1")),
        Gen.Const(Utf8("urn:herald:schema:fuzz-order:99999999999")));

    private static readonly Gen<string> Name = Gen.OneOf(
        Gen.OneOf(
            new[] { "id", "type", "time", "source", "specversion", "dataschema", "correlationid", "causationid", "userid", "partitionkey", "datacontenttype", "deliveryattempt" }
                .Select(a => Gen.Const(KafkaEnvelopeCodec.Prefix + a)).ToArray()),
        Gen.Const(KafkaEnvelopeCodec.ContentTypeHeader),
        Gen.Const(KafkaEnvelopeCodec.AttemptHeader),
        Gen.Const(KafkaEnvelopeCodec.DueHeader),
        Gen.Const(KafkaEnvelopeCodec.TargetHeader),
        Gen.Const(KafkaEnvelopeCodec.Prefix),
        Gen.String[0, 20]);

    private static readonly Gen<Headers?> Headers = Gen.OneOf(
        Gen.Const((Headers?)null),
        Gen.Select(Name, Value).Array[0, 12].Select(entries =>
        {
            var headers = new Headers();
            foreach (var (name, value) in entries)
            {
                headers.Add(name, value);
            }

            return (Headers?)headers;
        }),
        Gen.Select(FuzzInputs.IdText, FuzzInputs.MessageType, FuzzInputs.TimeText, FuzzInputs.ContentType, (id, type, time, contentType) => (Headers?)new Headers
        {
            { "ce_specversion", Utf8("1.0") },
            { "ce_id", Utf8(id) },
            { "ce_type", Utf8(type) },
            { "ce_time", Utf8(time) },
            { KafkaEnvelopeCodec.ContentTypeHeader, Utf8(contentType) },
        }),
        Gen.Guid.Select(id => (Headers?)new Headers
        {
            { "ce_specversion", Utf8("1.0") },
            { "ce_id", Utf8(id.ToString()) },
            { "ce_type", Utf8(FuzzInputs.OrderType) },
            { "ce_time", Utf8("2030-01-01T00:00:00.000Z") },
        }));

    [Fact]
    public async Task GeneratedRecords_NeverMakeDecodingThrow_AndEachIsHandledOrDeadLetteredWithAReason_Issue10()
    {
        await using var pipeline = await FuzzPipeline.StartAsync();
        var gen =
            from headers in Headers
            from key in Gen.OneOf(Gen.Const((byte[]?)null), FuzzInputs.Bytes.Select(b => (byte[]?)b))
            from value in Gen.Frequency((12, FuzzInputs.Body.Select(b => (byte[]?)b)), (1, Gen.Const((byte[]?)null)))
            select new Message<byte[]?, byte[]> { Headers = headers, Key = key, Value = value! };

        var cases = await Fuzz.RunAsync(
            gen,
            async record =>
            {
                // What the consumer reads beside the envelope: the attempt count of a redelivered copy.
                Assert.True(KafkaEnvelopeCodec.Attempt(record) >= 1, "the attempt count is at least 1");

                var envelope = KafkaEnvelopeCodec.Decode(record, "/herald", TimeProvider.System, out var failure);

                Assert.True(envelope.Body.Span.SequenceEqual(record.Value ?? []), "the value is kept as it came");
                await pipeline.DeliverDecodedAsync(envelope, failure);
            },
            output.WriteLine);

        pipeline.AssertRun(cases, output.WriteLine);
    }

    private static byte[]? Utf8(string text) => Encoding.UTF8.GetBytes(text);
}
