using System.Globalization;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// What the durable queues of the SQL stores (SQLite, PostgreSQL) share around their own statements: their capabilities,
/// the checks before a send, consumers started over a <see cref="ILeasedQueueBackend{TMessage}"/> once the storage is ready,
/// a dispose that stops those consumers before the transport releases its storage, and the drain of their dead-letter
/// table into the dead-letter store (<see cref="INativeDeadLetterSource"/>).
/// </summary>
/// <typeparam name="TMessage">The backend's claimed message.</typeparam>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public abstract class LeasedQueueTransport<TMessage> : ITransport, INativeDeadLetterSource
    where TMessage : LeasedMessage
{
    // Dead letters a drain reads per query.
    private const int DrainPage = 100;

    private readonly int _maxMessageBytes;
    private int _disposed;

    /// <summary>Creates the transport; its consumers run with <paramref name="settings"/>, and sends take bodies of at most <paramref name="maxMessageBytes"/>.</summary>
    protected LeasedQueueTransport(LeasedQueueSettings settings, int maxMessageBytes)
    {
        ArgumentNullException.ThrowIfNull(settings);
        Consumers = new LeasedQueueConsumers<TMessage>(settings);
        TimeProvider = settings.TimeProvider;
        Logger = settings.Logger;
        _maxMessageBytes = maxMessageBytes;
        Capabilities = new TransportCapabilities
        {
            IsDurable = true,
            SupportsDelayedDelivery = true,
            PreservesOrderPerPartitionKey = true,
            SupportsNativeDeadLetter = true,
            MaxMessageBytes = maxMessageBytes,
        };
    }

    /// <inheritdoc />
    public abstract string Name { get; }

    /// <inheritdoc />
    public TransportCapabilities Capabilities { get; }

    /// <summary>The clock of delays, visibility and leases.</summary>
    public TimeProvider TimeProvider { get; }

    /// <summary>Where the transport and its consumers log.</summary>
    public ILogger Logger { get; }

    /// <summary>Whether <see cref="DisposeAsync"/> has begun.</summary>
    protected bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    /// <summary>The consumers started and not yet stopped; <see cref="StartConsumer"/> starts one here.</summary>
    protected LeasedQueueConsumers<TMessage> Consumers { get; }

    /// <inheritdoc />
    public abstract ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Checks the arguments, makes the storage ready (<see cref="ReadyAsync"/>), then starts a consumer (<see cref="StartConsumer"/>).</summary>
    public async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ValidateName(queue, nameof(queue));
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        options.Validate();
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        await ReadyAsync(cancellationToken).ConfigureAwait(false);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        return StartConsumer(queue, options, handler);
    }

    /// <summary>The dead letters of <paramref name="queue"/>, oldest first, at most <paramref name="max"/>.</summary>
    public async ValueTask<IReadOnlyList<QueueDeadLetter>> ReadDeadLettersAsync(string queue, int max, CancellationToken cancellationToken = default)
    {
        ValidateName(queue, nameof(queue));
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(max);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        await ReadyAsync(cancellationToken).ConfigureAwait(false);
        return await ReadDeadLettersAsync(queue, afterId: 0, max, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Hands the queue's dead letters (rows the consumers moved to the dead-letter table while the dead-letter store was
    /// unreachable), oldest first, to <paramref name="moveAsync"/>, and deletes each row only after it returned. A row whose
    /// envelope does not decode is handed on with its <see cref="NativeDeadLetter.DecodeFailure"/>, never skipped, so no row
    /// stops the drain; a row <paramref name="moveAsync"/> throws on stays where it was, the drain goes on with the next,
    /// and the first such exception is thrown at the end.
    /// </summary>
    public async ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default)
    {
        ValidateName(queue, nameof(queue));
        ArgumentNullException.ThrowIfNull(moveAsync);
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        await ReadyAsync(cancellationToken).ConfigureAwait(false);
        var moved = 0;
        var after = 0L;
        var round = new DeadLetterDrainRound();
        while (true)
        {
            var page = await ReadDeadLettersAsync(queue, after, DrainPage, cancellationToken).ConfigureAwait(false);
            foreach (var letter in page)
            {
                var native = new NativeDeadLetter
                {
                    Envelope = letter.Envelope,
                    Queue = queue,
                    Reason = letter.Reason,
                    Time = letter.Time,
                    DecodeFailure = letter.DecodeFailure,

                    // The row, and what it holds: a table emptied and numbered anew gives its new rows other identities.
                    NativeId = string.Create(CultureInfo.InvariantCulture, $"{Name}/{queue}/{letter.Id}/{letter.Envelope.MessageId:N}/{letter.Time.UtcTicks}"),
                };
                after = letter.Id;
                if (!await round.TryMoveAsync(moveAsync, native, cancellationToken).ConfigureAwait(false))
                {
                    continue;
                }

                await DeleteDeadLetterAsync(letter.Id, cancellationToken).ConfigureAwait(false);
                moved++;
            }

            if (page.Count < DrainPage)
            {
                round.ThrowIfAnyFailed();
                return moved;
            }
        }
    }

    /// <summary>Stops the consumers, then releases the storage (<see cref="DisposeCoreAsync"/>); later calls do nothing.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await Consumers.DisposeAllAsync().ConfigureAwait(false);
        await DisposeCoreAsync().ConfigureAwait(false);
        GC.SuppressFinalize(this);
    }

    /// <summary>Creates or opens the storage (the schema, the file) before a consumer starts.</summary>
    protected abstract ValueTask ReadyAsync(CancellationToken cancellationToken);

    /// <summary>Starts a consumer of <paramref name="queue"/> in <see cref="Consumers"/>, over a backend of its own; the arguments are checked.</summary>
    protected abstract ITransportConsumer StartConsumer(string queue, ConsumerOptions options, DeliveryHandler handler);

    /// <summary>
    /// At most <paramref name="max"/> dead letters of <paramref name="queue"/> with a row id above <paramref name="afterId"/>,
    /// oldest first; the storage is ready. Never throws for a row whose envelope does not decode: it comes with its failure.
    /// </summary>
    protected abstract ValueTask<IReadOnlyList<QueueDeadLetter>> ReadDeadLettersAsync(string queue, long afterId, int max, CancellationToken cancellationToken);

    /// <summary>Deletes the dead letter with row id <paramref name="id"/> (one already gone is no error).</summary>
    protected abstract ValueTask DeleteDeadLetterAsync(long id, CancellationToken cancellationToken);

    /// <summary>Releases the storage; the consumers are already stopped.</summary>
    protected abstract ValueTask DisposeCoreAsync();

    /// <summary>Throws a <see cref="MessageTooLargeException"/> when the envelope's body is larger than the transport takes.</summary>
    protected void ThrowIfTooLarge(Envelope envelope) => TransportArguments.ThrowIfTooLarge(envelope, _maxMessageBytes);

    /// <summary>Throws an <see cref="ArgumentException"/> for <paramref name="parameter"/> when a queue or topic name is empty.</summary>
    protected static void ValidateName(string name, string parameter) => TransportArguments.ThrowIfEmptyName(name, parameter);
}
