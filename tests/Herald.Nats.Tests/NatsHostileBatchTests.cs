using CsCheck;
using Herald.Conformance.Fuzzing;
using Herald.Hosting;
using Herald.Nats.Transport;
using Microsoft.Extensions.DependencyInjection;
using NATS.Client.Core;
using NATS.Client.JetStream;
using Xunit.Abstractions;

namespace Herald.Nats.Tests;

/// <summary>
/// The end-to-end half of <see cref="NatsDecodeFuzzTests"/> (issue 10): 40 generated hostile messages (headers a NATS
/// client can send: broken CloudEvents attributes, percent-encoding that is broken or decodes to invalid UTF-8, odd
/// content types and schemas; hostile bodies), published to the queue's subject with the plain NATS.Net client between
/// 40 good messages, drained by a real host.
/// </summary>
public sealed class NatsHostileBatchTests(ITestOutputHelper output) : HostileBatchConformance<NatsHostileBatchTests.HostileMessage>(output), IAsyncLifetime
{
    private static readonly Gen<string> Ascii = Gen.OneOf(
        FuzzInputs.IdText.Select(NatsEnvelopeCodec.Escape),
        FuzzInputs.TimeText.Select(NatsEnvelopeCodec.Escape),
        FuzzInputs.ContentType.Select(NatsEnvelopeCodec.Escape),
        Gen.Const("%zz"),
        Gen.Const("%FF%FE%C0%80"),
        Gen.Const("%"),
        Gen.Const("urn:herald:schema:x:-7"),
        Gen.String[0, 30].Select(NatsEnvelopeCodec.Escape));

    private static readonly Gen<string> HostileType = FuzzInputs.MessageType.Where(t => t != ProbeType).Select(NatsEnvelopeCodec.Escape);

    private readonly (string Streams, string Subjects) _prefixes = NatsServer.NewPrefixes();

    private NatsNames Names => new(_prefixes.Subjects, _prefixes.Streams);

    /// <summary>One hostile message: its headers and body.</summary>
    public sealed record HostileMessage(IReadOnlyList<KeyValuePair<string, string>> Headers, byte[] Body)
    {
        /// <inheritdoc />
        public override string ToString() => $"{string.Join(", ", Headers.Select(h => $"{h.Key}: {h.Value}"))}; body {Body.Length} bytes";
    }

    protected override Gen<HostileMessage> HostileMessages =>
        from id in Gen.OneOf(Gen.Const((string?)null), Ascii.Select(s => (string?)s), Gen.Guid.Select(g => (string?)g.ToString()))
        from type in Gen.OneOf(Gen.Const((string?)null), HostileType.Select(s => (string?)s))
        from time in Gen.OneOf(Gen.Const((string?)null), Ascii.Select(s => (string?)s))
        from contentType in Gen.OneOf(Gen.Const((string?)null), Ascii.Select(s => (string?)s))
        from extra in Gen.Select(Gen.OneOf(Gen.Const("ce-dataschema"), Gen.Const("ce-userid"), Gen.Const("Herald-Not-Before"), Gen.Const("X-Other")), Ascii).Array[0, 3]
        from body in FuzzInputs.Body
        select new HostileMessage(
            [
                .. Optional("ce-specversion", id is null ? null : "1.0"),
                .. Optional("ce-id", id),
                .. Optional("ce-type", type),
                .. Optional("ce-time", time),
                .. Optional(NatsEnvelopeCodec.ContentTypeHeader, contentType),
                .. extra.Select(e => KeyValuePair.Create(e.Item1, e.Item2)),
            ],
            body);

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => NatsServer.DeleteStreamsAsync(_prefixes.Streams);

    protected override void UseTransport(HeraldBuilder herald) =>
        herald.UseNats(o =>
        {
            o.Url = NatsServer.Url;
            o.StreamPrefix = _prefixes.Streams;
            o.SubjectPrefix = _prefixes.Subjects;
        });

    protected override async Task<bool> WriteHostileAsync(string queue, HostileMessage message)
    {
        var headers = new NatsHeaders();
        foreach (var (name, value) in message.Headers)
        {
            headers[name] = value;
        }

        var (connection, js) = await NatsServer.ConnectAsync();
        await using (connection)
        {
            var ack = await js.PublishAsync(Names.QueueSubject(queue), message.Body, headers: headers);
            ack.EnsureSuccess();
            return !ack.Duplicate;
        }
    }

    protected override async Task<long> CountQueuedAsync(string queue)
    {
        var (connection, js) = await NatsServer.ConnectAsync();
        await using (connection)
        {
            var stream = await js.GetStreamAsync(Names.QueueStream(queue));
            return stream.Info.State.Messages;
        }
    }

    private static IEnumerable<KeyValuePair<string, string>> Optional(string name, string? value) =>
        value is null ? [] : [KeyValuePair.Create(name, value)];
}
