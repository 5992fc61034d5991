using Herald.EventSourcing.Upcasting;
using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Tests.Reliability;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Handling;

/// <summary>The decode and upcast steps of an endpoint's chain, on a started host over the in-memory transport.</summary>
public sealed class PipelineDecodeTests
{
    [Theory]
    [InlineData("application/json; charset=utf-8")]
    [InlineData("APPLICATION/JSON")]
    [InlineData("application/cloudevents+json")]
    [InlineData("application/vnd.orders+json; v=2")]
    [InlineData("")]
    public async Task ContentType_JsonOrAbsent_IsDecodedAsJson(string contentType)
    {
        var seen = new Seen();
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<NoteHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(seen));

        await host.Transport.SendAsync(host.Endpoint, Raw("pipe-note", """{"text":"hello"}""") with { ContentType = contentType });

        await Eventually.UntilAsync(() => seen.Texts.Contains("hello"), "the message is handled");
        Assert.Empty(await host.DeadLetters.ListAsync(new DeadLetterQuery { Endpoint = host.Endpoint }));
    }

    [Theory]
    [InlineData("text/plain")]
    [InlineData("application/x-protobuf")]
    [InlineData("application/jsonx")]
    public async Task ContentType_NeitherJsonNorReadByTheSerializer_IsDeadLetteredWithTheReason_AndTheConsumerGoesOn_Issue10(string contentType)
    {
        var seen = new Seen();
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<NoteHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(seen), concurrency: 1);
        var odd = Raw("pipe-note", """{"text":"odd"}""") with { ContentType = contentType };

        await host.Transport.SendAsync(host.Endpoint, odd);
        await host.Transport.SendAsync(host.Endpoint, Raw("pipe-note", """{"text":"good"}"""));

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Contains("UnsupportedContentType", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains(contentType, deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(odd.MessageId, deadLetter.Envelope.MessageId);
        await Eventually.UntilAsync(() => seen.Texts.Contains("good"), "the next message is handled");
        Assert.DoesNotContain("odd", seen.Texts);
        Assert.Empty(host.Transport.NackDelays);
    }

    [Fact]
    public async Task ContentType_TheRegisteredSerializerReads_IsDecodedByIt()
    {
        var seen = new Seen();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<NoteHandler>(ServiceLifetime.Singleton),
            s => s.AddSingleton(seen).AddSingleton<IMessageSerializer>(new ReversingSerializer()));

        await host.Transport.SendAsync(host.Endpoint, Raw("pipe-note", "}\"olleh\":\"txet\"{") with { ContentType = ReversingSerializer.MediaType + "; charset=utf-8" });

        await Eventually.UntilAsync(() => seen.Texts.Contains("hello"), "the serializer's own content type is decoded by it");
        Assert.Empty(await host.DeadLetters.ListAsync(new DeadLetterQuery { Endpoint = host.Endpoint }));
    }

    [Fact]
    public async Task OldVersionOverATransport_IsUpcastBeforeItIsDeserialized_AsOneReadFromTheStore()
    {
        var seen = new Seen();
        var upcasters = new EventUpcasterRegistry().Add("pipe-renamed", 1, body =>
        {
            body["fullName"] = body["name"]!.DeepClone();
            body.AsObject().Remove("name");
            return body;
        });
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<RenamedHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(seen).AddSingleton(upcasters));

        await host.Transport.SendAsync(host.Endpoint, Raw("pipe-renamed", """{"name":"Ada"}""") with { SchemaVersion = 1 });
        await host.Transport.SendAsync(host.Endpoint, Raw("pipe-renamed", """{"fullName":"Grace"}""") with { SchemaVersion = 2 });

        await Eventually.UntilAsync(() => seen.Texts.Count == 2, "both versions are handled");
        Assert.Equal(["Ada", "Grace"], seen.Texts.Order(StringComparer.Ordinal));
        Assert.Equal([2, 2], seen.Versions);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OldVersionNoUpcasterMigratesToTheRegisteredVersion_IsDeadLetteredAsUndecodable_NeverReadAsTheCurrentShape(bool withUpcasters)
    {
        // "pipe-renamed" is registered at v2; nothing migrates v1, so its body would be read as v2's (FullName null).
        var seen = new Seen();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<RenamedHandler>(ServiceLifetime.Singleton),
            s =>
            {
                s.AddSingleton(seen);
                if (withUpcasters)
                {
                    s.AddSingleton(new EventUpcasterRegistry().AddRename("pipe-named", "pipe-renamed"));
                }
            });

        await host.Transport.SendAsync(host.Endpoint, Raw("pipe-renamed", """{"name":"Ada"}""") with { SchemaVersion = 1 });

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(typeof(EventUpcastingException).FullName, deadLetter.ErrorType);
        Assert.Contains("registered at v2", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(1, deadLetter.Envelope.SchemaVersion);
        Assert.Empty(seen.Texts);
        Assert.Empty(host.Transport.NackDelays);
    }

    [Fact]
    public async Task FormerTypeNameOverATransport_IsRenamedAndUpcast_ThenHandledAsTheCurrentType()
    {
        // An event published from the store under the name its type had before ("pipe-named"), at v1.
        var seen = new Seen();
        var upcasters = new EventUpcasterRegistry()
            .AddRename("pipe-named", "pipe-renamed")
            .Add("pipe-renamed", 1, body =>
            {
                body["fullName"] = body["name"]!.DeepClone();
                body.AsObject().Remove("name");
                return body;
            });
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<RenamedHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(seen).AddSingleton(upcasters));

        await host.Transport.SendAsync(host.Endpoint, Raw("pipe-named", """{"name":"Ada"}""") with { SchemaVersion = 1 });

        await Eventually.UntilAsync(() => seen.Texts.Count == 1, "the event of the former name is handled");
        Assert.Equal(["Ada"], seen.Texts);
        Assert.Equal([2], seen.Versions);
        Assert.Equal(["pipe-renamed"], seen.Types);
        Assert.Empty(await host.DeadLetters.ListAsync(new DeadLetterQuery { Endpoint = host.Endpoint }));
    }

    [Fact]
    public async Task AnUpcasterChainThatDoesNotEndAtTheRegisteredVersion_IsRefusedAtStart()
    {
        // "pipe-renamed" is at v2: an upcaster from v2 would migrate every event written today past the type.
        var upcasters = new EventUpcasterRegistry().Add("pipe-renamed", 2, body => body);

        var error = await Assert.ThrowsAsync<MessageTypeRegistrationException>(() =>
            ReliabilityHost.StartAsync(h => h.AddHandler<RenamedHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(new Seen()).AddSingleton(upcasters)));

        Assert.Contains("'pipe-renamed'", error.Message, StringComparison.Ordinal);
        Assert.Contains("registered at v2", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ARenameOfANameARegisteredTypeUses_IsRefusedAtStart_NamingBoth()
    {
        // Events written today as "pipe-note" would be read as another type.
        var upcasters = new EventUpcasterRegistry().AddRename("pipe-note", "pipe-renamed");

        var error = await Assert.ThrowsAsync<MessageTypeRegistrationException>(() =>
            ReliabilityHost.StartAsync(h => h.AddHandler<NoteHandler>(ServiceLifetime.Singleton).AddHandler<RenamedHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(new Seen()).AddSingleton(upcasters)));

        Assert.Contains("'pipe-note'", error.Message, StringComparison.Ordinal);
        Assert.Contains("'pipe-renamed'", error.Message, StringComparison.Ordinal);
        Assert.Contains(typeof(Note).FullName!, error.Message, StringComparison.Ordinal);
    }

    private static Envelope Raw(string type, string json) => FailureInjectionTests.RawEnvelope(type, json);

    [MessageType("pipe-note")]
    public sealed record Note(string Text);

    [MessageType("pipe-renamed", Version = 2)]
    public sealed record Renamed(string FullName);

    public sealed class Seen
    {
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _texts = new();
        private readonly System.Collections.Concurrent.ConcurrentQueue<int> _versions = new();
        private readonly System.Collections.Concurrent.ConcurrentQueue<string> _types = new();

        public IReadOnlyList<string> Texts => [.. _texts];

        public IReadOnlyList<int> Versions => [.. _versions];

        public IReadOnlyList<string> Types => [.. _types];

        public void Add(string text, int version, string? type = null)
        {
            _types.Enqueue(type ?? "");
            _versions.Enqueue(version);
            _texts.Enqueue(text);
        }
    }

    public sealed class NoteHandler(Seen seen) : IMessageHandler<Note>
    {
        public ValueTask HandleAsync(Note message, MessageContext context, CancellationToken cancellationToken)
        {
            seen.Add(message.Text, context.Envelope.SchemaVersion);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class RenamedHandler(Seen seen) : IMessageHandler<Renamed>
    {
        public ValueTask HandleAsync(Renamed message, MessageContext context, CancellationToken cancellationToken)
        {
            seen.Add(message.FullName, context.Envelope.SchemaVersion, context.Envelope.MessageType);
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>A serializer of its own media type: JSON written backwards.</summary>
    private sealed class ReversingSerializer : IMessageSerializer
    {
        public const string MediaType = "application/x-reversed-json";
        private readonly SystemTextJsonMessageSerializer _json = new();

        public string ContentType => MediaType;

        public byte[] Serialize(object message, Type type) => [.. _json.Serialize(message, type).Reverse()];

        public object Deserialize(ReadOnlyMemory<byte> body, Type type) => _json.Deserialize(body.ToArray().Reverse().ToArray(), type);
    }
}
