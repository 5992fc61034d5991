using System.Net.Sockets;
using System.Text;
using Herald.Conformance;
using Herald.Nats.Transport;
using NATS.Client.JetStream;

namespace Herald.Nats.Tests;

/// <summary>
/// Header blocks no NATS client writes but the server passes on as they are (it checks no more than their length): written
/// on the wire by hand, to the queue's subject. Each must reach the handler as undecodable and be settled once, never
/// delivered again, and never stop the consumer from handling what comes after it.
/// </summary>
public sealed class NatsWireHeaderTests : NatsTestBase
{
    [Theory]
    [InlineData("NATS/1.0\r\nno-colon-here\r\n\r\n")]
    [InlineData("garbage\r\n\r\n")]
    [InlineData("NATS/1.0 abc\r\nce-id: x\r\n\r\n")]
    [InlineData("NATS/1.0\r\n: empty-name\r\n\r\n")]
    [InlineData("NATS/1.0\r\nce-id:\u00ff\u00fe\r\n\r\n")]
    public async Task AHeaderBlockNoClientWrites_IsSettledOnceAsUndecodable_AndTheNextMessageIsHandled(string headerBlock)
    {
        var transport = await CreateTransportAsync();
        var queue = "wire-" + Guid.NewGuid().ToString("N")[..8];
        await transport.DeclareQueueAsync(queue);
        var undecodable = 0;
        var (consumer, seen) = await ConsumeAsync(transport, queue, (delivery, _) =>
        {
            if (delivery.DecodeFailure is not null)
            {
                Interlocked.Increment(ref undecodable);
            }

            return ValueTask.CompletedTask;
        });
        await using (consumer)
        {
            await PublishRawAsync(Names.QueueSubject(queue), Encoding.Latin1.GetBytes(headerBlock), "hello"u8.ToArray());
            var after = NewEnvelope("after");
            await transport.SendAsync(queue, after);

            await Eventually.UntilAsync(() => seen.Any(e => e.MessageId == after.MessageId), "the message behind the hostile one is handled", Timeout);
            await Eventually.UntilAsync(() => Volatile.Read(ref undecodable) == 1, "the hostile message reaches the handler as undecodable", Timeout);
            await Eventually.UntilAsync(
                async () => (await transport.JetStream.GetConsumerAsync(Names.QueueStream(queue), NatsNames.Durable(queue))).Info is { NumAckPending: 0, NumRedelivered: 0 },
                "both are settled, neither delivered again",
                Timeout);
            Assert.Equal(1, Volatile.Read(ref undecodable));
        }
    }

    /// <summary>Publishes with <c>HPUB</c> over a socket of its own, so the header block goes out exactly as given.</summary>
    private static async Task PublishRawAsync(string subject, byte[] headers, byte[] body)
    {
        var server = new Uri(NatsServer.Url);
        using var client = new TcpClient();
        await client.ConnectAsync(server.Host, server.Port);
        var stream = client.GetStream();
        using var reader = new StreamReader(stream, Encoding.Latin1, leaveOpen: true);
        await reader.ReadLineAsync(); // INFO
        var frame = new MemoryStream();
        frame.Write(Encoding.ASCII.GetBytes("CONNECT {\"headers\":true,\"verbose\":false,\"pedantic\":false}\r\n"));
        frame.Write(Encoding.ASCII.GetBytes($"HPUB {subject} {headers.Length} {headers.Length + body.Length}\r\n"));
        frame.Write(headers);
        frame.Write(body);
        frame.Write("\r\nPING\r\n"u8);
        await stream.WriteAsync(frame.ToArray());
        var answer = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(5));
        Assert.Equal("PONG", answer);
    }
}
