using System.Globalization;

namespace Herald.Transport.ConsumerChild;

/// <summary>The command line of the child: which transport, where, which queue, and how to consume it.</summary>
internal sealed record ChildArguments
{
    public const string Usage =
        "usage: Herald.Transport.ConsumerChild <sqlite|postgres|rabbitmq|nats|sqs|kafka> <connection> <queue> " +
        "[--concurrency N] [--prefetch N] [--lease-ms N] [--poll-ms N] [--schema NAME] [--hold-after N] [--gate] [--kafka-mock]";

    /// <summary>sqlite, postgres, rabbitmq, nats, sqs or kafka.</summary>
    public required string Kind { get; init; }

    /// <summary>A database file, a PostgreSQL connection string, an amqp:// URI, an SQS endpoint URL or Kafka bootstrap servers.</summary>
    public required string Connection { get; init; }

    public required string Queue { get; init; }

    public int Concurrency { get; init; } = 2;

    public int Prefetch { get; init; } = 16;

    /// <summary>The SQL queues' lease (SQS: the visibility timeout); null for the transport's default.</summary>
    public TimeSpan? Lease { get; init; }

    /// <summary>The SQL queues' poll interval (how soon an expired lease of another process is noticed); null for the default.</summary>
    public TimeSpan? Poll { get; init; }

    /// <summary>The PostgreSQL queue's schema; null for the default.</summary>
    public string? Schema { get; init; }

    /// <summary>After this many completions, further deliveries are completed but never acked (the process is about to be killed).</summary>
    public int? HoldAfter { get; init; }

    /// <summary>Handlers wait for a "go" line on stdin before they complete anything, so the parent can see every process hold work first.</summary>
    public bool Gate { get; init; }

    /// <summary>Kafka: the cluster is librdkafka's mock (the KIP-848 group protocol; topics appear on first use, not through the admin API).</summary>
    public bool KafkaMock { get; init; }

    public static ChildArguments? Parse(string[] args)
    {
        if (args.Length < 3 || args[0] is not ("sqlite" or "postgres" or "rabbitmq" or "nats" or "sqs" or "kafka"))
        {
            return null;
        }

        var parsed = new ChildArguments { Kind = args[0], Connection = args[1], Queue = args[2] };
        for (var i = 3; i < args.Length; i++)
        {
            if (args[i] == "--gate")
            {
                parsed = parsed with { Gate = true };
                continue;
            }

            if (args[i] == "--kafka-mock")
            {
                parsed = parsed with { KafkaMock = true };
                continue;
            }

            if (i + 1 == args.Length)
            {
                return null;
            }

            var value = args[++i];
            switch (args[i - 1])
            {
                case "--concurrency" when Positive(value) is { } n:
                    parsed = parsed with { Concurrency = n };
                    break;
                case "--prefetch" when Positive(value) is { } n:
                    parsed = parsed with { Prefetch = n };
                    break;
                case "--lease-ms" when Positive(value) is { } n:
                    parsed = parsed with { Lease = TimeSpan.FromMilliseconds(n) };
                    break;
                case "--poll-ms" when Positive(value) is { } n:
                    parsed = parsed with { Poll = TimeSpan.FromMilliseconds(n) };
                    break;
                case "--schema" when value.Length > 0:
                    parsed = parsed with { Schema = value };
                    break;
                case "--hold-after" when Positive(value) is { } n:
                    parsed = parsed with { HoldAfter = n };
                    break;
                default:
                    return null;
            }
        }

        return parsed;
    }

    private static int? Positive(string value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n > 0 ? n : null;
}
