namespace Herald.AmazonSqs.Transport;

/// <summary>How Herald's queue and topic names become SQS queue names: the prefix, the name, and <c>.fifo</c> on a FIFO queue.</summary>
internal sealed class AmazonSqsNames
{
    /// <summary>The longest SQS queue name, <c>.fifo</c> included.</summary>
    public const int MaxQueueName = 80;

    private const string FifoSuffix = ".fifo";
    private readonly AmazonSqsTransportOptions _options;

    public AmazonSqsNames(AmazonSqsTransportOptions options)
    {
        _options = options;

        // The longest Herald name whose every derived SQS name still fits: the dead-letter queue's and the topic registry's.
        var derived = Math.Max(options.DeadLetterQueueName("x").Length, options.TopicQueueName("x").Length) - 1;
        MaxNameBytes = MaxQueueName - options.QueueNamePrefix.Length - derived - (options.FifoQueues ? FifoSuffix.Length : 0);
    }

    /// <summary>The longest queue or topic name the transport accepts.</summary>
    public int MaxNameBytes { get; }

    /// <summary>The SQS name of a queue.</summary>
    public string Queue(string queue) => _options.QueueNamePrefix + queue + (_options.FifoQueues ? FifoSuffix : "");

    /// <summary>The SQS name of a queue's dead-letter queue (FIFO when the queue is: SQS requires it).</summary>
    public string DeadLetterQueue(string queue) => _options.QueueNamePrefix + _options.DeadLetterQueueName(queue) + (_options.FifoQueues ? FifoSuffix : "");

    /// <summary>The SQS name of the queue whose tags list a topic's bound queues (a standard queue: it holds no messages).</summary>
    public string Topic(string topic) => _options.QueueNamePrefix + _options.TopicQueueName(topic);

    /// <summary>Throws when <paramref name="name"/> cannot be (part of) an SQS queue name.</summary>
    public void Validate(string name, string parameter)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new ArgumentException("A queue or topic name must not be empty.", parameter);
        }

        if (!IsValidPart(name))
        {
            throw new ArgumentException($"'{name}' cannot name an SQS queue: only letters, digits, '-' and '_' are allowed.", parameter);
        }

        if (name.Length > MaxNameBytes)
        {
            throw new ArgumentException($"'{name}' is longer than {MaxNameBytes} characters, the most that leaves room in SQS's 80 for the prefix and the derived queues.", parameter);
        }
    }

    /// <summary>True when every character may appear in an SQS queue name.</summary>
    public static bool IsValidPart(string text)
    {
        foreach (var c in text)
        {
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_'))
            {
                return false;
            }
        }

        return true;
    }
}
