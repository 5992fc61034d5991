using System.Text.Json;
using System.Text.Json.Serialization.Metadata;

namespace Herald.Messages;

/// <summary>
/// The default serializer, on System.Text.Json. Source-generated contexts are used when they are placed in
/// the options' <see cref="JsonSerializerOptions.TypeInfoResolverChain"/> (reflection is the fallback).
/// </summary>
public sealed class SystemTextJsonMessageSerializer : IMessageSerializer
{
    private static ReadOnlySpan<byte> Utf8ByteOrderMark => [0xEF, 0xBB, 0xBF];

    private readonly JsonSerializerOptions _options;

    /// <summary>Creates the serializer with web defaults (camelCase) and reflection as the last resolver.</summary>
    public SystemTextJsonMessageSerializer()
        : this(CreateDefaultOptions())
    {
    }

    /// <summary>Creates the serializer with the given options; they are made read-only.</summary>
    public SystemTextJsonMessageSerializer(JsonSerializerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.TypeInfoResolver is null && options.TypeInfoResolverChain.Count == 0)
        {
            options.TypeInfoResolverChain.Add(new DefaultJsonTypeInfoResolver());
        }

        options.MakeReadOnly();
        _options = options;
    }

    /// <inheritdoc />
    public string ContentType => ContentTypes.Json;

    /// <summary>The options in use.</summary>
    public JsonSerializerOptions Options => _options;

    /// <summary>Web defaults with reflection as the last resolver; add source-generated contexts in front of it.</summary>
    public static JsonSerializerOptions CreateDefaultOptions() => new(JsonSerializerDefaults.Web);

    /// <inheritdoc />
    public byte[] Serialize(object message, Type type) => JsonSerializer.SerializeToUtf8Bytes(message, type, _options);

    /// <inheritdoc />
    public object Deserialize(ReadOnlyMemory<byte> body, Type type)
    {
        try
        {
            // One UTF-8 byte-order mark is skipped, as System.Text.Json's stream reads and ASP.NET Core's request bodies do:
            // .NET's Encoding.UTF8 preamble, PowerShell and many Windows tools write it; the span reader refuses it.
            var span = body.Span;
            if (span.StartsWith(Utf8ByteOrderMark))
            {
                span = span[Utf8ByteOrderMark.Length..];
            }

            return JsonSerializer.Deserialize(span, type, _options)
                ?? throw new JsonException("The body is the JSON literal null.");
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Not only malformed JSON: a message type that validates in its constructor (or a converter) throws its own
            // exceptions, and the body is just as undecodable; running it again would throw again.
            throw new MessageDeserializationException(type.Name, ex);
        }
    }
}
