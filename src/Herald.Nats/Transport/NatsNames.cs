using System.Buffers;
using System.Security.Cryptography;
using System.Text;

namespace Herald.Nats.Transport;

/// <summary>
/// The streams, subjects and consumers Herald names for a queue or topic, from the prefixes of the options. A queue or
/// topic name that is not already a valid subject token and stream name is made one ('_' for each character JetStream
/// refuses, then a short hash of the real name, so two names never meet).
/// </summary>
internal sealed class NatsNames(string subjectPrefix, string streamPrefix)
{
    private static readonly SearchValues<char> NameCharacters =
        SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_");

    public string QueueStream(string queue) => $"{streamPrefix}_Q_{Token(queue)}";

    public string QueueSubject(string queue) => $"{subjectPrefix}.q.{Token(queue)}";

    public string TopicStream(string topic) => $"{streamPrefix}_T_{Token(topic)}";

    public string TopicSubject(string topic) => $"{subjectPrefix}.t.{Token(topic)}";

    public string DeadLetterStream => $"{streamPrefix}_DEAD_LETTERS";

    /// <summary>The stream that keeps a queue's delayed messages until they are due (a work queue, see <c>NatsDelayMover</c>).</summary>
    public string DelayStream(string queue) => $"{streamPrefix}_DELAYED_{Token(queue)}";

    public string DelaySubject(string queue) => $"{subjectPrefix}.delayed.{Token(queue)}";

    /// <summary>
    /// The stream that keeps delayed publishes to a topic mapped to a declared stream until they are due ('-T', which no
    /// queue's <see cref="DelayStream"/> has after <c>DELAYED</c>).
    /// </summary>
    public string TopicDelayStream(string topic) => $"{streamPrefix}_DELAYED-T_{Token(topic)}";

    public string TopicDelaySubject(string topic) => $"{subjectPrefix}.delayed-t.{Token(topic)}";

    /// <summary>The durable consumer of a queue's delay stream, shared by every process consuming the queue.</summary>
    public const string DelayDurable = "mover";

    /// <summary>The KV bucket of the locks held while a queue stream's sources change (its stream is <c>KV_</c> and this).</summary>
    public string BindingLockBucket => $"{streamPrefix}_BINDING_LOCKS";

    public string DeadLetterSubjects => $"{subjectPrefix}.dead-letter.>";

    public string DeadLetterSubject(string queue) => $"{subjectPrefix}.dead-letter.{Token(queue)}";

    /// <summary>The stream that keeps the server's max-deliveries advisories of a queue's durable consumer, until drained.</summary>
    public string MaxDeliveriesStream(string queue) => $"{streamPrefix}_MAX_DELIVERIES_{Token(queue)}";

    /// <summary>The subject the server sends a consumer's max-deliveries advisories on (a core NATS event, kept only where a stream takes it).</summary>
    public static string MaxDeliveriesAdvisory(string stream, string consumer) => $"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}";

    /// <summary>The durable consumer that drains a queue's max-deliveries advisories.</summary>
    public const string MaxDeliveriesDurable = "drain";

    /// <summary>The durable consumer of a queue: one per queue, shared by every process consuming it (competing consumers).</summary>
    public static string Durable(string queue) => Token(queue);

    /// <summary>The durable consumer that drains a queue's dead letters.</summary>
    public static string DeadLetterDurable(string queue) => "drain-" + Token(queue);

    /// <summary>The name as one subject token that is also a valid stream and consumer name.</summary>
    public static string Token(string name)
    {
        if (name.Length is > 0 and <= 64 && !name.AsSpan().ContainsAnyExcept(NameCharacters))
        {
            return name;
        }

        var cleaned = string.Create(Math.Min(name.Length, 48), name, static (span, source) =>
        {
            for (var i = 0; i < span.Length; i++)
            {
                span[i] = NameCharacters.Contains(source[i]) ? source[i] : '_';
            }
        });
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes(name));
        return cleaned + "_" + Convert.ToHexStringLower(hash.AsSpan(0, 5));
    }

    public static bool IsToken(string? token) =>
        !string.IsNullOrEmpty(token) && token.AsSpan().IndexOfAny(". *>\t\r\n") < 0;

    public static bool IsStreamName(string? name) =>
        !string.IsNullOrEmpty(name) && name.Length <= 200 && !name.AsSpan().ContainsAnyExcept(NameCharacters);

    /// <summary>Whether the text is a subject: tokens separated by dots, none empty; with wildcards, '*' tokens and a last '>'.</summary>
    public static bool IsSubject(string? subject, bool wildcards)
    {
        if (string.IsNullOrEmpty(subject))
        {
            return false;
        }

        var tokens = subject.Split('.');
        for (var i = 0; i < tokens.Length; i++)
        {
            var token = tokens[i];
            if (wildcards && (token == "*" || (token == ">" && i == tokens.Length - 1)))
            {
                continue;
            }

            if (!IsToken(token))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>Whether a literal subject matches a filter with wildcards.</summary>
    public static bool Matches(string filter, string subject)
    {
        var f = filter.Split('.');
        var s = subject.Split('.');
        for (var i = 0; i < f.Length; i++)
        {
            if (f[i] == ">")
            {
                return s.Length > i;
            }

            if (i >= s.Length || (f[i] != "*" && f[i] != s[i]))
            {
                return false;
            }
        }

        return f.Length == s.Length;
    }
}
