using System.Text;
using Confluent.Kafka;
using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Kafka.Tests;

/// <summary>
/// The undecodable-message contract on Kafka: records written by a plain producer, with a corrupt envelope or every
/// header wrong, reach the dead-letter store and the partition moves on. "Queued" is what the group has not committed.
/// </summary>
public sealed class KafkaUndecodableMessageTests : UndecodableMessageConformance
{
    protected override void UseTransport(HeraldBuilder herald) => herald.UseKafka(KafkaTestBase.ApplyTestOptions);

    protected override async Task WriteUndecodableAsync(string queue, Guid messageId)
    {
        // A readable id and type, but a time that is no time: the envelope cannot be decoded.
        using var producer = KafkaTestBase.RawProducer();
        await producer.ProduceAsync(queue, new Message<byte[]?, byte[]>
        {
            Value = UndecodableBody.ToArray(),
            Headers = new Headers
            {
                { "ce_specversion", "1.0"u8.ToArray() },
                { "ce_id", Encoding.UTF8.GetBytes(messageId.ToString()) },
                { "ce_type", Encoding.UTF8.GetBytes(ProbeType) },
                { "ce_time", "yesterday-ish"u8.ToArray() },
            },
        });
    }

    protected override async Task WriteBrokenAsync(string queue)
    {
        using var producer = KafkaTestBase.RawProducer();
        await producer.ProduceAsync(queue, new Message<byte[]?, byte[]>
        {
            Key = [0xFF, 0x00, 0xFE],
            Value = [0xC3, 0x28, 0x00, 0xFF],
            Headers = new Headers
            {
                { "ce_id", [0xFF, 0xFF] },
                { "ce_type", [] },
                { "ce_time", "-999999-99-99"u8.ToArray() },
                { "x-herald-attempt", "many"u8.ToArray() },
                { "content-type", [0x80] },
            },
        });
    }

    protected override Task<long> CountQueuedAsync(string queue) => Task.FromResult(KafkaTestBase.Uncommitted(queue, queue));

    protected override Task<long> CountNativeDeadLettersAsync(string queue) => Task.FromResult(KafkaTestBase.EndOffsets(queue + ".dead-letter"));
}
