using Herald.Conformance.Transport;
using Herald.Hosting;
using Herald.Nats.Transport;
using Microsoft.Extensions.DependencyInjection;
using NATS.Client.Core;
using NATS.Client.JetStream;

namespace Herald.Nats.Tests;

/// <summary>
/// Messages written behind Herald's back (a plain client publishing to the queue's subject) whose envelope cannot be
/// decoded reach the dead-letter store with their reason, and the messages behind them are handled (issue 9, issue 13).
/// </summary>
public sealed class UndecodableMessageTests : UndecodableMessageConformance, IAsyncLifetime
{
    private readonly (string Streams, string Subjects) _prefixes = NatsServer.NewPrefixes();
    private NatsNames Names => new(_prefixes.Subjects, _prefixes.Streams);

    protected override void UseTransport(HeraldBuilder herald) =>
        herald.UseNats(o =>
        {
            o.Url = NatsServer.Url;
            o.StreamPrefix = _prefixes.Streams;
            o.SubjectPrefix = _prefixes.Subjects;
        });

    // A CloudEvents message whose time is no time at all: its id and type are readable, its envelope is not.
    protected override Task WriteUndecodableAsync(string queue, Guid messageId) =>
        PublishAsync(queue, UndecodableBody.ToArray(), new NatsHeaders
        {
            ["ce-specversion"] = "1.0",
            ["ce-id"] = messageId.ToString("D"),
            ["ce-type"] = ProbeType,
            ["ce-time"] = "the day before yesterday",
        });

    // Every header wrong (id not a Guid, no type, an impossible time, an odd schema) and a body that is not JSON.
    protected override Task WriteBrokenAsync(string queue) =>
        PublishAsync(queue, new byte[] { 0xff, 0xfe, 0x00, 0x7b }, new NatsHeaders
        {
            ["ce-specversion"] = "1.0",
            ["ce-id"] = "not-a-guid",
            ["ce-time"] = "2031-02-31T25:61:61Z",
            ["ce-dataschema"] = "urn:herald:schema:x:-7",
            ["Content-Type"] = "%zz",
        });

    protected override async Task<long> CountQueuedAsync(string queue)
    {
        var (connection, js) = await NatsServer.ConnectAsync();
        await using (connection)
        {
            var stream = await js.GetStreamAsync(Names.QueueStream(queue));
            return stream.Info.State.Messages;
        }
    }

    protected override async Task<long> CountNativeDeadLettersAsync(string queue)
    {
        var (connection, js) = await NatsServer.ConnectAsync();
        await using (connection)
        {
            try
            {
                var stream = await js.GetStreamAsync(Names.DeadLetterStream);
                return stream.Info.State.Messages;
            }
            catch (NatsJSApiException e) when (e.Error.Code == 404)
            {
                return 0;
            }
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => NatsServer.DeleteStreamsAsync(_prefixes.Streams);

    private async Task PublishAsync(string queue, byte[] body, NatsHeaders headers)
    {
        var (connection, js) = await NatsServer.ConnectAsync();
        await using (connection)
        {
            var ack = await js.PublishAsync(Names.QueueSubject(queue), body, headers: headers);
            ack.EnsureSuccess();
        }
    }
}
