using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Herald.EventSourcing.Upcasting;
using Herald.Hosting;
using Herald.Messages;
using Herald.Projections;
using Herald.Persistence;

namespace Herald.EventSourcing.Aggregates;

/// <summary>
/// Loads aggregates from their stream (from the latest snapshot plus the events after it) and saves their uncommitted
/// events with the loaded version as the expected version, so a concurrent change throws <see cref="ConcurrencyException"/>.
/// Registered by <c>AddAggregate</c> as a scoped service that saves through the scope's <see cref="IUnitOfWork"/>: the events
/// (and a snapshot when due) commit with the handler's other writes, and a conflict surfaces at the commit.
/// </summary>
/// <typeparam name="TAggregate">The aggregate type.</typeparam>
public sealed class AggregateRepository<TAggregate>
    where TAggregate : Aggregate, new()
{
    private readonly IEventStore _store;
    private readonly IEventStore _stored;
    private readonly UpcastingEventStore? _upcasting;
    private readonly MessageTypeRegistry _messageTypes;
    private readonly IMessageSerializer _serializer;
    private readonly TimeProvider _timeProvider;
    private readonly ISnapshotStore? _snapshots;
    private readonly Type? _snapshotType;
    private readonly int _snapshotEvery;
    private readonly IUnitOfWork? _unitOfWork;
    private readonly IServiceProvider? _services;
    private readonly InlineProjector? _inline;
    private readonly bool _scoped;
    private readonly ILogger _logger;

    /// <summary>
    /// Creates a repository that appends directly (each save commits on its own); pass a snapshot store when
    /// <see cref="AggregateOptions.SnapshotEvery"/> is above 0, and a logger to see a snapshot that could not be stored or read.
    /// </summary>
    public AggregateRepository(
        IEventStore store,
        MessageTypeRegistry messageTypes,
        IMessageSerializer serializer,
        TimeProvider timeProvider,
        ISnapshotStore? snapshots = null,
        AggregateOptions? options = null,
        ILogger<AggregateRepository<TAggregate>>? logger = null)
        : this(store, messageTypes, serializer, timeProvider, unitOfWork: null, snapshots, options, logger)
    {
    }

    /// <summary>
    /// Creates a repository whose saves enlist in <paramref name="unitOfWork"/>: they are written when it commits, and a
    /// conflict surfaces there.
    /// </summary>
    public AggregateRepository(
        IEventStore store,
        MessageTypeRegistry messageTypes,
        IMessageSerializer serializer,
        TimeProvider timeProvider,
        IUnitOfWork? unitOfWork,
        ISnapshotStore? snapshots = null,
        AggregateOptions? options = null,
        ILogger<AggregateRepository<TAggregate>>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(messageTypes);
        ArgumentNullException.ThrowIfNull(serializer);
        ArgumentNullException.ThrowIfNull(timeProvider);
        options ??= AggregateOptions.Default;
        ArgumentOutOfRangeException.ThrowIfNegative(options.SnapshotEvery, nameof(options));

        Category = options.Category ?? DefaultCategory(typeof(TAggregate));
        if (Category.Length == 0 || Category.Contains(StreamName.CategorySeparator, StringComparison.Ordinal) || !StreamName.IsValid(Category, out _))
        {
            throw new ArgumentException($"The category '{Category}' of {typeof(TAggregate).Name} must be a valid stream name without '{StreamName.CategorySeparator}'.", nameof(options));
        }

        _snapshotType = new TAggregate().SnapshotType;
        if (options.SnapshotEvery > 0 && (snapshots is null || _snapshotType is null))
        {
            throw new ArgumentException(
                $"{typeof(TAggregate).Name} is set to snapshot every {options.SnapshotEvery} events, which needs a snapshot store and an aggregate that overrides SnapshotType.",
                nameof(options));
        }

        _store = store;
        _stored = UpcastingEventStore.Unwrap(store);
        _upcasting = store as UpcastingEventStore;
        _messageTypes = messageTypes;
        _serializer = serializer;
        _timeProvider = timeProvider;
        _snapshots = snapshots;
        _snapshotEvery = options.SnapshotEvery;
        _unitOfWork = unitOfWork;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The repository <c>AddAggregate</c> registers: it saves only inside the unit of work that commits its scope.</summary>
    internal AggregateRepository(IServiceProvider services, AggregateOptions? options)
        : this(
            ReadingThroughUpcasters(services),
            services.GetRequiredService<MessageTypeRegistry>(),
            services.GetRequiredService<IMessageSerializer>(),
            services.GetRequiredService<TimeProvider>(),
            services.GetRequiredService<IUnitOfWork>(),
            services.GetService<ISnapshotStore>(),
            options,
            services.GetService<ILoggerFactory>()?.CreateLogger<AggregateRepository<TAggregate>>())
    {
        _scoped = true;
        _services = services;
        _inline = services.GetService<InlineProjector>();
    }

    /// <summary>The stream category of this aggregate type.</summary>
    public string Category { get; }

    /// <summary>The stream of the aggregate with this id: <c>{category}-{id}</c>.</summary>
    public string StreamNameFor(string id) => StreamName.For(Category, id);

    /// <summary>Loads the aggregate; one that has no events comes back new, with <see cref="Aggregate.Version"/> 0 and the id set.</summary>
    public async Task<TAggregate> LoadAsync(string id, CancellationToken cancellationToken = default)
    {
        var stream = StreamNameFor(id);
        if (await LoadSnapshotAsync(stream, cancellationToken).ConfigureAwait(false) is { } snapshot
            && await ReplayAsync(id, stream, snapshot, cancellationToken).ConfigureAwait(false) is { } restored)
        {
            return restored;
        }

        return (await ReplayAsync(id, stream, snapshot: null, cancellationToken).ConfigureAwait(false))!;
    }

    /// <summary>
    /// Appends the uncommitted events (expected version: the loaded one), then marks them saved and takes a snapshot when due;
    /// returns the stream's version after them. With nothing to save it only checks the version. A stream that moved on throws
    /// <see cref="ConcurrencyException"/>: here when the repository appends directly, at the commit when it has a unit of work.
    /// Without <paramref name="metadata"/>, the events carry the running unit of work's (the handled message's or command's).
    /// Appending directly, a snapshot that cannot be stored is logged, not thrown: the events are committed. In a unit of work, one
    /// that cannot be taken (<c>CreateSnapshot</c> or the serializer throws) is logged and the events commit without it.
    /// </summary>
    public async Task<long> SaveAsync(TAggregate aggregate, EventMetadata? metadata = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(aggregate);
        if (string.IsNullOrEmpty(aggregate.Id))
        {
            throw new ArgumentException($"The {typeof(TAggregate).Name} has no Id; set it (usually in When) before saving.", nameof(aggregate));
        }

        var running = UnitOfWorkRunner.Current;
        if (_scoped && (running is null || !running.Owns(_unitOfWork!)))
        {
            // Nothing would ever commit a unit of work outside the runner's scope: refuse rather than lose the events.
            throw new InvalidOperationException(
                $"The AggregateRepository<{typeof(TAggregate).Name}> from DI saves through its scope's unit of work, which only a running unit of work " +
                "commits: use it in a message or command handler, or inside UnitOfWorkRunner.RunAsync (not from the root provider or a scope of your own).");
        }

        metadata ??= (_unitOfWork is not null ? running?.Metadata : null) ?? EventMetadata.None;
        var stream = StreamNameFor(aggregate.Id);
        var now = _timeProvider.GetUtcNow();

        // The events continue the trace of the code that saved them (a handled message, a command), as outbox messages do,
        // so the projections and subscriptions that apply them join it; metadata that names a trace of its own keeps it.
        var headers = Diagnostics.TraceContext.WithCurrentUnlessSet(metadata.Headers ?? EmptyHeaders.Instance);
        var envelopes = new Envelope[aggregate.UncommittedEvents.Count];
        for (var i = 0; i < envelopes.Length; i++)
        {
            var @event = aggregate.UncommittedEvents[i];
            var info = _messageTypes.GetByType(@event.GetType());
            envelopes[i] = new Envelope
            {
                MessageId = MessageIds.NewId(now),
                MessageType = info.Name,
                SchemaVersion = info.Version,
                Time = now,
                CorrelationId = metadata.CorrelationId,
                CausationId = metadata.CausationId,
                UserId = metadata.UserId,
                PartitionKey = stream,
                ContentType = _serializer.ContentType,
                Headers = headers,
                Body = _serializer.Serialize(@event, info.ClrType),
            };
        }

        var loadedVersion = aggregate.Version;
        var expected = ExpectedVersion.FromLoadedVersion(loadedVersion);
        long version;
        var versionKnown = true;
        if (_unitOfWork is null)
        {
            version = (await _store.AppendAsync(stream, expected, envelopes, cancellationToken).ConfigureAwait(false)).StreamVersion;
        }
        else
        {
            // Written at the commit, where a conflict (which also undoes a snapshot staged below) surfaces. The store says
            // where the events go: an aggregate loaded as new may start its stream again above deleted versions.
            var planned = await _store.AppendAsync(stream, expected, envelopes, _unitOfWork, cancellationToken).ConfigureAwait(false);
            versionKnown = planned is not null || loadedVersion > 0;
            version = planned ?? loadedVersion + envelopes.Length;
            if (_inline is not null)
            {
                // Inline projections change their read models in this unit of work: with the events, or not at all.
                await _inline.ApplyAsync(stream, aggregate.UncommittedEvents, envelopes, _unitOfWork, _services!, cancellationToken).ConfigureAwait(false);
            }
        }

        aggregate.MarkSaved(version);

        // A store that could not say where a new aggregate's events go (it owes that for NoStream) leaves the version a guess:
        // a snapshot claiming it could be below the events it holds, and a load would replay them onto it. No snapshot then.
        if (_snapshotEvery > 0 && envelopes.Length > 0 && versionKnown && version / _snapshotEvery > (version - envelopes.Length) / _snapshotEvery)
        {
            await SaveSnapshotAsync(aggregate, stream, now, cancellationToken).ConfigureAwait(false);
        }

        return version;
    }

    internal static string DefaultCategory(Type type)
    {
        var name = type.Name;
        var tick = name.IndexOf('`', StringComparison.Ordinal);
        if (tick >= 0)
        {
            name = name[..tick];
        }

        var builder = new StringBuilder(name.Length);
        foreach (var c in name)
        {
            if (char.IsAsciiLetterOrDigit(c) || c == '_')
            {
                builder.Append(builder.Length == 0 ? char.ToLowerInvariant(c) : c);
            }
        }

        return builder.ToString();
    }

    // The upcasters registered in DI (which the consuming pipeline applies) apply to aggregate loads too.
    private static IEventStore ReadingThroughUpcasters(IServiceProvider services)
    {
        var store = services.GetRequiredService<IEventStore>();
        return services.GetService<EventUpcasterRegistry>() is { } upcasters ? store.WithUpcasting(upcasters) : store;
    }

    private (string Name, int Version) SnapshotTypeName(Type type) =>
        _messageTypes.TryGetByType(type, out var info) ? (info.Name, info.Version) : (type.FullName ?? type.Name, 1);

    // The stream's snapshot when the repository takes them and it is of the aggregate's snapshot type and schema version.
    private async Task<Snapshot?> LoadSnapshotAsync(string stream, CancellationToken cancellationToken)
    {
        if (_snapshots is null || _snapshotType is null)
        {
            return null;
        }

        var snapshot = await _snapshots.LoadSnapshotAsync(stream, cancellationToken).ConfigureAwait(false);
        var (name, version) = SnapshotTypeName(_snapshotType);
        return snapshot is null || snapshot.Version < 1 || snapshot.StateType != name || snapshot.SchemaVersion != version ? null : snapshot;
    }

    // Replays the stream onto a new aggregate, or onto the snapshot: then one read starts at the snapshot's version, and the
    // snapshot counts only if the event at exactly that version comes first (null when it does not). One taken before the
    // stream was soft-deleted covers events that no longer count, and one ahead of the stream (snapshots kept apart from, or
    // restored later than, the events) claims events it does not hold, which would leave the aggregate at a version every save
    // conflicts with. Checking and replaying in one read keeps a deletion between the two from joining the snapshot to the
    // events of the stream started again; the read's own pages are checked the same way (StreamDeletedDuringReadException).
    // The events are read under the upcasters and migrated here, so the snapshot's own event, which the snapshot holds, is
    // not migrated and cannot fail the load if it no longer migrates.
    private async Task<TAggregate?> ReplayAsync(string id, string stream, Snapshot? snapshot, CancellationToken cancellationToken)
    {
        var aggregate = new TAggregate { Id = id };
        var atSnapshot = snapshot is not null;
        await foreach (var stored in _stored.ReadStreamAsync(stream, ReadDirection.Forward, snapshot?.Version ?? 1, int.MaxValue, cancellationToken).ConfigureAwait(false))
        {
            if (atSnapshot)
            {
                if (stored.Version != snapshot!.Version || !TryRestore(aggregate, stream, snapshot))
                {
                    return null;
                }

                atSnapshot = false;
                continue;
            }

            var recorded = _upcasting?.Upcast(stored) ?? stored;
            try
            {
                var type = _messageTypes.GetByName(recorded.EventType);
                if (RegisteredVersionCheck.Behind(recorded.Envelope, type) is { } behind)
                {
                    throw behind;
                }

                aggregate.ApplyStored(_serializer.Deserialize(recorded.Envelope.Body, type.ClrType), recorded.Version);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // The cause alone does not say which event of which stream: a dead letter's reason would point at the
                // handled message (a "message could not be decoded") instead of the stored event.
                throw new AggregateLoadException(typeof(TAggregate), recorded, ex);
            }
        }

        return atSnapshot ? null : aggregate;
    }

    // A snapshot only spares replaying its events: one that no longer reads (its state type changed shape under the same name
    // and schema version) must not keep the aggregate from loading. RestoreSnapshot may have run halfway, so the replay then
    // starts on a new instance.
    private bool TryRestore(TAggregate aggregate, string stream, Snapshot snapshot)
    {
        try
        {
            aggregate.ApplySnapshot(_serializer.Deserialize(snapshot.State, _snapshotType!), snapshot.Version);
            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Log.SnapshotRestoreFailed(_logger, ex, stream, snapshot.Version);
            return false;
        }
    }

    private async Task SaveSnapshotAsync(TAggregate aggregate, string stream, DateTimeOffset now, CancellationToken cancellationToken)
    {
        if (_unitOfWork is not null)
        {
            Snapshot snapshot;
            try
            {
                snapshot = CreateSnapshot(aggregate, stream, now);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // The aggregate's CreateSnapshot or the serializer failed: the events need no snapshot to commit, and failing
                // the save would fail the command on every retry from here on, as each crosses the same multiple.
                Log.SnapshotNotTaken(_logger, ex, stream, aggregate.Version);
                return;
            }

            await _snapshots!.SaveSnapshotAsync(snapshot, _unitOfWork, cancellationToken).ConfigureAwait(false);
            return;
        }

        try
        {
            await _snapshots!.SaveSnapshotAsync(CreateSnapshot(aggregate, stream, now), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // The events are committed already: failing the save would have the caller run its command again on top of
            // them. Without the snapshot a load replays a few more events, until the next one is taken.
            Log.SnapshotSaveFailed(_logger, ex, stream, aggregate.Version);
        }
    }

    private Snapshot CreateSnapshot(TAggregate aggregate, string stream, DateTimeOffset now)
    {
        var (name, version) = SnapshotTypeName(_snapshotType!);
        var state = _serializer.Serialize(aggregate.CreateSnapshot(), _snapshotType!);
        return new Snapshot(stream, aggregate.Version, name, version, state, now);
    }
}
