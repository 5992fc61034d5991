using Amazon.SQS.Model;
using CsCheck;
using Herald.AmazonSqs.Transport;
using Herald.Conformance.Fuzzing;
using Xunit.Abstractions;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// Issue 10: generated SQS messages (CloudEvents attributes of every data type, binary ones, ids that are no Guid, times
/// beyond the calendar, a <c>herald</c> attribute that is no JSON, of wrong types, deep, with attempts past int and due
/// times past the calendar, a base64 marker on a body that is none, receive counts and sent times that are no numbers)
/// through what the consumer runs on each message (<see cref="SqsEnvelopeCodec.Decode"/>) and what comes out through the
/// real consuming chain (<see cref="FuzzPipeline"/>). Decoding never throws: a message decodes to a valid envelope, or
/// carries a declared decode failure with its reason and is dead-lettered once; every other one is handled once. No
/// server needed: a pure function and an in-process chain.
/// </summary>
public sealed class SqsDecodeFuzzTests(ITestOutputHelper output)
{
    private static readonly Gen<string> Extra = Gen.OneOf(
        Gen.Const("{}"),
        Gen.Const("{\"attempts\":2147483647}"),
        Gen.Const("{\"attempts\":2147483648}"),
        Gen.Const("{\"attempts\":-5}"),
        Gen.Const("{\"attempts\":\"many\"}"),
        Gen.Const("{\"due\":\"9999-12-31T23:59:59.999Z\"}"),
        Gen.Const("{\"due\":\"0001-01-01T00:00:00.000Z\"}"),
        Gen.Const("{\"due\":7}"),
        Gen.Const("{\"body\":\"base64\"}"),
        Gen.Const("{\"body\":1}"),
        Gen.Const("{\"headers\":{\"a\":\"b\"}}"),
        Gen.Const("{\"headers\":{\"a\":1}}"),
        Gen.Const("{\"headers\":[1,2]}"),
        Gen.Const("{\"causationid\":{},\"userid\":[]}"),
        Gen.Const("{\"dataschema\":\"urn:herald:schema:fuzz-order:2147483648\"}"),
        Gen.Const("[1,2]"),
        Gen.Const("null"),
        Gen.Const("{\"headers\":{\"a\":\"b\""),
        Gen.Int[100, 2000].Select(depth => string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth)),
        FuzzInputs.TimeText.Select(t => $$"""{"due":"{{t}}","attempts":1}"""),
        Gen.String[0, 40]);

    private static readonly Gen<MessageAttributeValue> Attribute = Gen.OneOf(
        Gen.OneOf(FuzzInputs.IdText, FuzzInputs.TimeText, FuzzInputs.MessageType, FuzzInputs.ContentType, Extra, Gen.String[0, 40])
            .Select(text => new MessageAttributeValue { DataType = "String", StringValue = text }),
        Gen.Int.Select(n => new MessageAttributeValue { DataType = "Number", StringValue = n.ToString(System.Globalization.CultureInfo.InvariantCulture) }),
        FuzzInputs.Bytes.Select(b => new MessageAttributeValue { DataType = "Binary", BinaryValue = new MemoryStream(b) }),
        Gen.Const(new MessageAttributeValue { DataType = "String", StringValue = null }),
        Gen.Const(new MessageAttributeValue()));

    private static readonly Gen<string> Name = Gen.OneOf(
        Gen.Const(SqsEnvelopeCodec.SpecVersion),
        Gen.Const(SqsEnvelopeCodec.Id),
        Gen.Const(SqsEnvelopeCodec.Type),
        Gen.Const(SqsEnvelopeCodec.Source),
        Gen.Const(SqsEnvelopeCodec.Time),
        Gen.Const(SqsEnvelopeCodec.PartitionKey),
        Gen.Const(SqsEnvelopeCodec.CorrelationId),
        Gen.Const(SqsEnvelopeCodec.ContentType),
        Gen.Const(SqsEnvelopeCodec.Extra),
        Gen.Const("message-id"),
        Gen.String[0, 20]);

    private static readonly Gen<Dictionary<string, MessageAttributeValue>?> Attributes = Gen.OneOf(
        Gen.Const((Dictionary<string, MessageAttributeValue>?)null),
        Gen.Dictionary(Name, Attribute)[0, 10].Select(d => (Dictionary<string, MessageAttributeValue>?)d),
        Gen.Select(FuzzInputs.IdText, FuzzInputs.MessageType, FuzzInputs.TimeText, Extra, (id, type, time, extra) => (Dictionary<string, MessageAttributeValue>?)new()
        {
            [SqsEnvelopeCodec.SpecVersion] = Text("1.0"),
            [SqsEnvelopeCodec.Id] = Text(id),
            [SqsEnvelopeCodec.Type] = Text(type),
            [SqsEnvelopeCodec.Time] = Text(time),
            [SqsEnvelopeCodec.Extra] = Text(extra),
        }),
        Gen.Guid.Select(id => (Dictionary<string, MessageAttributeValue>?)new()
        {
            [SqsEnvelopeCodec.SpecVersion] = Text("1.0"),
            [SqsEnvelopeCodec.Id] = Text(id.ToString()),
            [SqsEnvelopeCodec.Type] = Text(FuzzInputs.OrderType),
            [SqsEnvelopeCodec.Time] = Text("2030-01-01T00:00:00.000Z"),
        }));

    private static readonly Gen<string?> Number = Gen.OneOf(
        Gen.Const((string?)null),
        Gen.Int[0, 5].Select(n => (string?)n.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        Gen.Const((string?)"2147483647"),
        Gen.Const((string?)"99999999999999999999"),
        Gen.Const((string?)"-1"),
        Gen.Const((string?)"253402300799999"),
        Gen.String[0, 10].Select(s => (string?)s));

    [Fact]
    public async Task GeneratedMessages_NeverMakeDecodingThrow_AndEachIsHandledOrDeadLetteredWithAReason_Issue10()
    {
        await using var pipeline = await FuzzPipeline.StartAsync();
        var gen =
            from attributes in Attributes
            from body in Gen.OneOf(
                FuzzInputs.Body.Select(b => (string?)System.Text.Encoding.UTF8.GetString(b)),
                Gen.Const((string?)null),
                Gen.Const((string?)"="),
                Gen.Const((string?)"not base64!"),
                Gen.String[0, 100].Select(s => (string?)s))
            from receives in Number
            from sent in Number
            from messageId in Gen.OneOf(Gen.Const((string?)null), FuzzInputs.IdText.Select(s => (string?)s))
            from raw in Gen.Frequency((4, Gen.Const(false)), (1, Gen.Const(true)))
            select (Message: new Message
            {
                MessageId = messageId,
                Body = body,
                MessageAttributes = attributes,
                Attributes = SystemAttributes(receives, sent),
            }, Raw: raw);

        var cases = await Fuzz.RunAsync(
            gen,
            async sample =>
            {
                var now = DateTimeOffset.UtcNow;
                var envelope = SqsEnvelopeCodec.Decode(sample.Message, sample.Raw ? FuzzInputs.OrderType : null, "/herald", now, out var carried, out var failure);

                Assert.True(SqsEnvelopeCodec.ReceivesOf(sample.Message) >= 1, "the receive count is at least 1");
                Assert.True(carried.AttemptsBefore >= 0, "no negative attempts are carried");
                await pipeline.DeliverDecodedAsync(envelope, failure);
            },
            output.WriteLine,
            print: sample => Print(sample.Message) + (sample.Raw ? " (raw queue)" : ""));

        pipeline.AssertRun(cases, output.WriteLine);
    }

    private static Dictionary<string, string>? SystemAttributes(string? receives, string? sent)
    {
        if (receives is null && sent is null)
        {
            return null;
        }

        var attributes = new Dictionary<string, string>(StringComparer.Ordinal);
        if (receives is not null)
        {
            attributes[SqsEnvelopeCodec.ReceiveCount] = receives;
        }

        if (sent is not null)
        {
            attributes[SqsEnvelopeCodec.SentTimestamp] = sent;
        }

        return attributes;
    }

    private static string Print(Message message)
    {
        static string Cut(string? text) => text is null ? "null" : text.Length <= 80 ? $"'{text}'" : $"'{text[..80]}...' ({text.Length} chars)";
        var attributes = message.MessageAttributes is null
            ? "null"
            : string.Join(", ", message.MessageAttributes.Select(a => $"{Cut(a.Key)}: {a.Value.DataType} {Cut(a.Value.StringValue)}{(a.Value.BinaryValue is { } b ? $" ({b.Length} bytes)" : "")}"));
        var system = message.Attributes is null ? "null" : string.Join(", ", message.Attributes.Select(a => $"{a.Key}={Cut(a.Value)}"));
        return $"id {Cut(message.MessageId)}, attributes {{{attributes}}}, system {{{system}}}, body {Cut(message.Body)}";
    }

    private static MessageAttributeValue Text(string value) => new() { DataType = "String", StringValue = value };
}
