using System.Collections.Concurrent;
using System.Globalization;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.Messages;
using Herald.Transport;

namespace Herald.AmazonSqs.Transport;

internal sealed partial class AmazonSqsTransport
{
    // Resolved once per SQS name (created first when Herald owns the topology); a failed resolution is forgotten and tried again.
    private readonly ConcurrentDictionary<string, Lazy<Task<string>>> _queueUrls = new(StringComparer.Ordinal);

    // A topic's bound queues as last read from its registry's tags, and when; a binding made here replaces the entry.
    private readonly ConcurrentDictionary<string, (string[] Queues, DateTimeOffset ReadAt)> _bindings = new(StringComparer.Ordinal);

    /// <inheritdoc />
    public async ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default)
    {
        Names.Validate(topic, nameof(topic));
        Names.Validate(queue, nameof(queue));
        await QueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);
        var registry = await UrlAsync(Names.Topic(topic), deadLetterArn: null, cancellationToken).ConfigureAwait(false);

        // The queue's own name is the tag key, so binding twice is one binding, and every process sees it.
        await Client.TagQueueAsync(
            new TagQueueRequest { QueueUrl = registry, Tags = new Dictionary<string, string>(StringComparer.Ordinal) { [queue] = "bound" } },
            cancellationToken).ConfigureAwait(false);
        _bindings.TryRemove(topic, out _);
    }

    /// <inheritdoc />
    public async ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        Names.Validate(topic, nameof(topic));
        CheckSend(envelope, options);
        var queues = await BoundQueuesAsync(topic, cancellationToken).ConfigureAwait(false);
        if (queues.Length == 0)
        {
            return;
        }

        // Not atomic across queues (no SNS): the outbox retries a publish until every send landed, and consumers deduplicate by id.
        var delay = options?.Delay ?? TimeSpan.Zero;
        var sends = new Task[queues.Length];
        for (var i = 0; i < queues.Length; i++)
        {
            sends[i] = SendToAsync(queues[i]);
        }

        await Task.WhenAll(sends).ConfigureAwait(false);

        Task SendToAsync(string queue) => SendToQueueAsync(queue, envelope, delay, cancellationToken);
    }

    /// <summary>Sends to a queue by name; a send that finds the queue deleted fails, and the next one creates or looks it up again.</summary>
    private async Task SendToQueueAsync(string queue, Envelope envelope, TimeSpan delay, CancellationToken cancellationToken)
    {
        var url = await QueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);
        try
        {
            await SendAsync(url, envelope, attemptsBefore: 0, delay, due: null, reason: null, copy: false, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (ForgetIfGone(queue, e))
        {
            throw;
        }
    }

    /// <summary>
    /// For an exception filter: true, after forgetting <paramref name="queue"/>'s cached URLs (<see cref="ForgetQueue"/>),
    /// when SQS answered that the queue does not exist (deleted behind Herald's back, or never made); the caller rethrows.
    /// </summary>
    internal bool ForgetIfGone(string queue, Exception exception)
    {
        if (exception is not (QueueDoesNotExistException or AmazonSQSException { ErrorCode: "AWS.SimpleQueueService.NonExistentQueue" or "QueueDoesNotExist" }))
        {
            return false;
        }

        ForgetQueue(queue);
        return true;
    }

    /// <summary>
    /// Forgets the cached URLs of a queue and of its dead-letter queue (whose ARN the queue's redrive policy is made from), so
    /// the next use creates them again when Herald owns the topology, or looks them up, instead of failing on a stale URL until a restart.
    /// </summary>
    private void ForgetQueue(string queue)
    {
        _queueUrls.TryRemove(Names.Queue(queue), out _);
        _queueUrls.TryRemove(Names.DeadLetterQueue(queue), out _);
    }

    /// <summary>The URL of a queue, created with its dead-letter queue and redrive policy on first use when Herald owns the topology.</summary>
    internal async Task<string> QueueUrlAsync(string queue, CancellationToken cancellationToken)
    {
        var name = Names.Queue(queue);
        if (_queueUrls.TryGetValue(name, out var known) && known.Value.IsCompletedSuccessfully)
        {
            return known.Value.Result;
        }

        string? deadLetterArn = null;
        if (Options.DeclareTopology && Options.MaxReceiveCount is not null)
        {
            var deadLetterUrl = await DeadLetterQueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);
            try
            {
                deadLetterArn = await ArnAsync(deadLetterUrl, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (ForgetIfGone(queue, e))
            {
                throw;
            }
        }

        return await UrlAsync(name, deadLetterArn, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The URL of a queue's dead-letter queue (created on first use when Herald owns the topology).</summary>
    internal Task<string> DeadLetterQueueUrlAsync(string queue, CancellationToken cancellationToken) =>
        UrlAsync(Names.DeadLetterQueue(queue), deadLetterArn: null, cancellationToken);

    private async Task<string> UrlAsync(string name, string? deadLetterArn, CancellationToken cancellationToken)
    {
        while (true)
        {
            // Not bound to the first caller's token: others share the resolution.
            var lazy = _queueUrls.GetOrAdd(name, n => new Lazy<Task<string>>(() => ResolveAsync(n, deadLetterArn)));
            try
            {
                return await lazy.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (Exception) when (!cancellationToken.IsCancellationRequested && lazy.Value.IsFaulted)
            {
                _queueUrls.TryRemove(new KeyValuePair<string, Lazy<Task<string>>>(name, lazy));
                throw;
            }
        }
    }

    private async Task<string> ResolveAsync(string name, string? deadLetterArn)
    {
        if (!Options.DeclareTopology)
        {
            return (await Client.GetQueueUrlAsync(new GetQueueUrlRequest { QueueName = name }).ConfigureAwait(false)).QueueUrl;
        }

        var attributes = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [QueueAttributeName.VisibilityTimeout] = Seconds(Options.VisibilityTimeout).ToString(CultureInfo.InvariantCulture),
            [QueueAttributeName.MessageRetentionPeriod] = "1209600",
        };
        if (name.EndsWith(".fifo", StringComparison.Ordinal))
        {
            attributes[QueueAttributeName.FifoQueue] = "true";
        }

        if (deadLetterArn is not null)
        {
            attributes[QueueAttributeName.RedrivePolicy] = string.Create(
                CultureInfo.InvariantCulture,
                $"{{\"maxReceiveCount\":{Options.MaxReceiveCount},\"deadLetterTargetArn\":\"{deadLetterArn}\"}}");
        }

        try
        {
            // CreateQueue returns the existing queue's URL when its attributes match.
            return (await Client.CreateQueueAsync(new CreateQueueRequest { QueueName = name, Attributes = attributes }).ConfigureAwait(false)).QueueUrl;
        }
        catch (AmazonSQSException e) when (e.ErrorCode is "QueueAlreadyExists" or "QueueNameExists" || e is QueueNameExistsException)
        {
            // Made by an operator (or an older version) with other attributes: used as it is.
            return (await Client.GetQueueUrlAsync(new GetQueueUrlRequest { QueueName = name }).ConfigureAwait(false)).QueueUrl;
        }
    }

    private async Task<string> ArnAsync(string queueUrl, CancellationToken cancellationToken)
    {
        var response = await Client.GetQueueAttributesAsync(
            new GetQueueAttributesRequest { QueueUrl = queueUrl, AttributeNames = [QueueAttributeName.QueueArn] },
            cancellationToken).ConfigureAwait(false);
        return response.QueueARN ?? throw new HeraldException($"SQS did not give the ARN of {queueUrl}.");
    }

    private async Task<string[]> BoundQueuesAsync(string topic, CancellationToken cancellationToken)
    {
        var now = Now();
        if (_bindings.TryGetValue(topic, out var known) && now - known.ReadAt < Options.BindingCacheDuration)
        {
            return known.Queues;
        }

        string registry;
        try
        {
            registry = await UrlAsync(Names.Topic(topic), deadLetterArn: null, cancellationToken).ConfigureAwait(false);
        }
        catch (QueueDoesNotExistException)
        {
            // Nobody bound anything to it yet (and Herald does not own the topology): a publish reaches nobody, as on a broker.
            return [];
        }

        var tags = await Client.ListQueueTagsAsync(new ListQueueTagsRequest { QueueUrl = registry }, cancellationToken).ConfigureAwait(false);
        var queues = tags.Tags is null ? [] : tags.Tags.Keys.Order(StringComparer.Ordinal).ToArray();
        _bindings[topic] = (queues, now);
        return queues;
    }
}
