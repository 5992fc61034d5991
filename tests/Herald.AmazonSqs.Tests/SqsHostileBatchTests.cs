using System.Collections.Concurrent;
using System.Text;
using Amazon.SQS;
using Amazon.SQS.Model;
using CsCheck;
using Herald.AmazonSqs.Transport;
using Herald.Conformance.Fuzzing;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// The end-to-end half of <see cref="SqsDecodeFuzzTests"/> (issue 10): 40 generated hostile messages (broken CloudEvents
/// attributes, a <c>herald</c> attribute that is no JSON or of wrong types, binary and number attributes where text is
/// read, hostile bodies), sent with the plain AWSSDK.SQS client between 40 good messages, drained by a real host. What
/// SQS itself refuses (a body over its limit or with characters it does not carry) is counted as not stored.
/// </summary>
public sealed class SqsHostileBatchTests(ITestOutputHelper output) : HostileBatchConformance<SqsHostileBatchTests.HostileMessage>(output), IAsyncLifetime
{
    private static readonly Gen<string> Text = Gen.OneOf(FuzzInputs.IdText, FuzzInputs.TimeText, FuzzInputs.ContentType, Gen.String[1, 30]).Select(Clean);

    private static readonly Gen<string> Extra = Gen.OneOf(
        Gen.Const("{\"attempts\":\"many\"}"),
        Gen.Const("{\"attempts\":2147483648}"),
        Gen.Const("{\"due\":7}"),
        Gen.Const("{\"due\":\"9999-12-31T23:59:59.9999999Z\"}"),
        Gen.Const("{\"body\":\"base64\"}"),
        Gen.Const("{\"headers\":{\"a\":1}}"),
        Gen.Const("{\"headers\":[1,2]}"),
        Gen.Const("{\"causationid\":{}}"),
        Gen.Const("[1,2]"),
        Gen.Const("{\"headers\":{\"a\":\"b\""),
        Gen.Int[100, 500].Select(depth => string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth)));

    private static readonly Gen<MessageAttributeValue> Attribute = Gen.OneOf(
        Text.Select(t => new MessageAttributeValue { DataType = "String", StringValue = t }),
        Gen.Int.Select(n => new MessageAttributeValue { DataType = "Number", StringValue = n.ToString(System.Globalization.CultureInfo.InvariantCulture) }),
        FuzzInputs.Bytes.Where(b => b.Length is > 0 and < 1000).Select(b => new MessageAttributeValue { DataType = "Binary", BinaryValue = new MemoryStream(b) }));

    private readonly ConcurrentDictionary<string, byte> _queues = new(StringComparer.Ordinal);

    /// <summary>One hostile message: its attributes and body.</summary>
    public sealed record HostileMessage(IReadOnlyList<KeyValuePair<string, MessageAttributeValue>> Attributes, string Body)
    {
        /// <inheritdoc />
        public override string ToString() =>
            $"{string.Join(", ", Attributes.Select(a => $"{a.Key}: {a.Value.DataType} {a.Value.StringValue?[..Math.Min(60, a.Value.StringValue.Length)]}"))}; body {Body.Length} chars";
    }

    protected override Gen<HostileMessage> HostileMessages =>
        from id in Gen.OneOf(Gen.Const((MessageAttributeValue?)null), Attribute.Select(a => (MessageAttributeValue?)a), Gen.Guid.Select(g => (MessageAttributeValue?)String(g.ToString())))
        from type in Gen.OneOf(
            Gen.Const((MessageAttributeValue?)null),
            FuzzInputs.MessageType.Select(Clean).Where(t => t.Length > 0 && t != ProbeType).Select(t => (MessageAttributeValue?)String(t)),
            Attribute.Select(a => (MessageAttributeValue?)a))
        from time in Gen.OneOf(Gen.Const((MessageAttributeValue?)null), Attribute.Select(a => (MessageAttributeValue?)a))
        from extra in Gen.OneOf(Gen.Const((MessageAttributeValue?)null), Extra.Select(e => (MessageAttributeValue?)String(e)), Attribute.Select(a => (MessageAttributeValue?)a))
        from other in Gen.Select(Gen.OneOf(Gen.Const(SqsEnvelopeCodec.ContentType), Gen.Const(SqsEnvelopeCodec.CorrelationId), Gen.Const("x-other")), Attribute).Array[0, 3]
        from body in FuzzInputs.Body.Select(b => Clean(Encoding.UTF8.GetString(b)))
        select new HostileMessage(
            [
                .. Optional(SqsEnvelopeCodec.SpecVersion, id is null ? null : String("1.0")),
                .. Optional(SqsEnvelopeCodec.Id, id),
                .. Optional(SqsEnvelopeCodec.Type, type),
                .. Optional(SqsEnvelopeCodec.Time, time),
                .. Optional(SqsEnvelopeCodec.Extra, extra),
                .. other.DistinctBy(o => o.Item1).Select(o => KeyValuePair.Create(o.Item1, o.Item2)),
            ],
            body.Length == 0 ? "=" : body);

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => SqsEmulator.DeleteQueuesAsync(_queues.Keys);

    protected override void UseTransport(HeraldBuilder herald) => herald.UseAmazonSqs(o =>
    {
        var emulator = SqsEmulator.Options();
        o.Credentials = emulator.Credentials;
        o.ClientConfig.ServiceURL = emulator.ClientConfig.ServiceURL;
        o.ClientConfig.AuthenticationRegion = emulator.ClientConfig.AuthenticationRegion;
        o.VisibilityTimeout = emulator.VisibilityTimeout;
    });

    protected override async Task<bool> WriteHostileAsync(string queue, HostileMessage message)
    {
        _queues.TryAdd(queue, 0);
        using var client = SqsEmulator.NewClient();
        var request = new SendMessageRequest
        {
            QueueUrl = (await client.GetQueueUrlAsync(queue)).QueueUrl,
            MessageBody = message.Body,
            MessageAttributes = message.Attributes.ToDictionary(),
        };
        try
        {
            await client.SendMessageAsync(request);
            return true;
        }
        catch (AmazonSQSException e)
        {
            // Refused by SQS itself (too large, characters it does not carry): it never reaches a consumer.
            Output.WriteLine($"SQS refused a hostile message: {e.ErrorCode}: {e.Message}");
            return false;
        }
    }

    protected override async Task<long> CountQueuedAsync(string queue)
    {
        using var client = SqsEmulator.NewClient();
        var url = (await client.GetQueueUrlAsync(queue)).QueueUrl;
        var attributes = await client.GetQueueAttributesAsync(url, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]);
        return attributes.ApproximateNumberOfMessages + attributes.ApproximateNumberOfMessagesNotVisible + attributes.ApproximateNumberOfMessagesDelayed;
    }

    private static IEnumerable<KeyValuePair<string, MessageAttributeValue>> Optional(string name, MessageAttributeValue? value) =>
        value is null ? [] : [KeyValuePair.Create(name, value)];

    private static MessageAttributeValue String(string value) => new() { DataType = "String", StringValue = value };

    // SQS carries only XML characters (#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF): the others would be refused, not delivered.
    private static string Clean(string text)
    {
        var builder = new StringBuilder(text.Length);
        foreach (var rune in Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(text)).EnumerateRunes())
        {
            var c = rune.Value;
            if (c is 0x9 or 0xA or 0xD || (c >= 0x20 && c <= 0xD7FF) || (c >= 0xE000 && c <= 0xFFFD) || c >= 0x10000)
            {
                builder.Append(rune.ToString());
            }
        }

        return builder.ToString();
    }
}
