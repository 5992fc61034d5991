using System.Text;
using Confluent.Kafka;
using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.Hosting;
using Herald.Kafka.Transport;
using Microsoft.Extensions.DependencyInjection;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// The end-to-end half of <see cref="KafkaDecodeFuzzTests"/> (issue 10): 40 generated hostile records (CloudEvents headers
/// of any bytes, invalid UTF-8 included, keys that are no text, hostile values), produced with the plain Confluent.Kafka
/// producer between 40 good messages on the cluster the Kafka tests use, drained by a real host.
/// </summary>
public sealed class KafkaHostileBatchTests(ITestOutputHelper output) : HostileBatchConformance<KafkaHostileBatchTests.HostileRecord>(output)
{
    private static readonly Gen<byte[]> Text = Gen.OneOf(
        FuzzInputs.IdText.Select(Utf8),
        FuzzInputs.TimeText.Select(Utf8),
        FuzzInputs.ContentType.Select(Utf8),
        FuzzInputs.Bytes);

    private static readonly Gen<byte[]> HostileType = Gen.OneOf(FuzzInputs.MessageType.Where(t => t != ProbeType).Select(Utf8), FuzzInputs.Bytes);

    /// <summary>One hostile record: its headers, key and value.</summary>
    public sealed record HostileRecord(IReadOnlyList<KeyValuePair<string, byte[]>> Headers, byte[]? Key, byte[] Value)
    {
        /// <inheritdoc />
        public override string ToString() =>
            $"{string.Join(", ", Headers.Select(h => $"{h.Key}: {Convert.ToHexString(h.Value.AsSpan(0, Math.Min(32, h.Value.Length)))}"))}; key {Key?.Length}; value {Value.Length} bytes";
    }

    protected override Gen<HostileRecord> HostileMessages =>
        from id in Gen.OneOf(Gen.Const((byte[]?)null), Text.Select(b => (byte[]?)b), Gen.Guid.Select(g => (byte[]?)Utf8(g.ToString())))
        from type in Gen.OneOf(Gen.Const((byte[]?)null), HostileType.Select(b => (byte[]?)b))
        from time in Gen.OneOf(Gen.Const((byte[]?)null), Text.Select(b => (byte[]?)b))
        from contentType in Gen.OneOf(Gen.Const((byte[]?)null), Text.Select(b => (byte[]?)b))
        from extra in Gen.Select(Gen.OneOf(Gen.Const("ce_dataschema"), Gen.Const(KafkaEnvelopeCodec.AttemptHeader), Gen.Const("ce_userid"), Gen.Const("x-other")), Text).Array[0, 3]
        from key in Gen.OneOf(Gen.Const((byte[]?)null), FuzzInputs.Bytes.Select(b => (byte[]?)b))
        from value in FuzzInputs.Body
        select new HostileRecord(
            [
                .. Optional("ce_specversion", id is null ? null : Utf8("1.0")),
                .. Optional("ce_id", id),
                .. Optional("ce_type", type),
                .. Optional("ce_time", time),
                .. Optional(KafkaEnvelopeCodec.ContentTypeHeader, contentType),
                .. extra.Select(e => KeyValuePair.Create(e.Item1, e.Item2)),
            ],
            key,
            value);

    protected override void UseTransport(HeraldBuilder herald) => herald.UseKafka(KafkaTestBase.ApplyTestOptions);

    protected override async Task<bool> WriteHostileAsync(string queue, HostileRecord record)
    {
        var headers = new Headers();
        foreach (var (name, value) in record.Headers)
        {
            headers.Add(name, value);
        }

        using var producer = KafkaTestBase.RawProducer();
        var result = await producer.ProduceAsync(queue, new Message<byte[]?, byte[]> { Key = record.Key, Value = record.Value, Headers = headers });
        return result.Status == PersistenceStatus.Persisted;
    }

    protected override Task<long> CountQueuedAsync(string queue) => Task.FromResult(KafkaTestBase.Uncommitted(queue, queue));

    private static IEnumerable<KeyValuePair<string, byte[]>> Optional(string name, byte[]? value) =>
        value is null ? [] : [KeyValuePair.Create(name, value)];

    private static byte[] Utf8(string text) => Encoding.UTF8.GetBytes(text);
}
