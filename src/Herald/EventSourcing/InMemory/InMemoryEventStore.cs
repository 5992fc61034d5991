using System.Collections.Concurrent;
using System.Collections.Frozen;
using System.Runtime.CompilerServices;
using Herald.Internal;
using Herald.Messages;
using Herald.Persistence;

namespace Herald.EventSourcing.InMemory;

/// <summary>
/// The event store, checkpoint store and snapshot store in process memory, for tests and single-process use. One lock
/// orders appends, so global positions are contiguous and in commit order.
/// </summary>
public sealed class InMemoryEventStore : IEventStore, ICheckpointStore, ISnapshotStore
{
    private const int ReadChunk = 256;

    private readonly Lock _gate = new();
    private readonly long _gateOrder = InMemoryUnitOfWork.NextGateOrder();
    private readonly List<RecordedEvent> _all = [];
    private readonly Dictionary<string, StreamState> _streams = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, long> _checkpoints = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, Snapshot> _snapshots = new(StringComparer.Ordinal);
    private readonly InMemoryEventStoreOptions _options;
    private readonly Signal _appended = new();

    /// <summary>Creates an empty store with the default options.</summary>
    public InMemoryEventStore()
        : this(InMemoryEventStoreOptions.Default)
    {
    }

    /// <summary>Creates an empty store with the given limits and clock.</summary>
    public InMemoryEventStore(InMemoryEventStoreOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxEventBytes, 1, nameof(options));
        _options = options;
    }

    /// <inheritdoc />
    public ValueTask<AppendResult> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default)
    {
        AppendValidation.Validate(stream, expectedVersion, events, _options.MaxEventBytes);
        cancellationToken.ThrowIfCancellationRequested();

        AppendResult result;
        lock (_gate)
        {
            _streams.TryGetValue(stream, out var state);
            var current = state?.CurrentVersion ?? 0;
            if (events.Count == 0)
            {
                if (!expectedVersion.IsSatisfiedBy(current))
                {
                    throw new ConcurrencyException(stream, expectedVersion, current);
                }

                return ValueTask.FromResult(new AppendResult(current, current == 0 ? 0 : state!.Events[^1].Position));
            }

            if (state is not null && TryGetIdempotentResult(stream, state, expectedVersion, events, out var original))
            {
                return ValueTask.FromResult(original);
            }

            if (!expectedVersion.IsSatisfiedBy(current))
            {
                throw new ConcurrencyException(stream, expectedVersion, current);
            }

            result = AppendUnderLock(stream, state, events, Internal.StoredTime.Of(_options.TimeProvider.GetUtcNow()));
        }

        _appended.Pulse();
        return ValueTask.FromResult(result);
    }

    /// <inheritdoc />
    public ValueTask<long?> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        AppendValidation.Validate(stream, expectedVersion, events, _options.MaxEventBytes);
        cancellationToken.ThrowIfCancellationRequested();
        var own = InMemoryUnitOfWork.Of(unitOfWork);
        var staged = events.Select(Copy).ToArray();
        return EnlistAsync(own, stream, expectedVersion, staged);
    }

    private async ValueTask<long?> EnlistAsync(InMemoryUnitOfWork own, string stream, ExpectedVersion expectedVersion, Envelope[] staged)
    {
        var planned = await EnlistedAppends.PlanAsync(expectedVersion, staged.Length, () =>
        {
            lock (_gate)
            {
                return ValueTask.FromResult(_streams.TryGetValue(stream, out var state)
                    ? (state.LastVersion, state.VersionsById.TryGetValue(staged[0].MessageId, out var start) ? start : (long?)null)
                    : (0L, (long?)null));
            }
        }).ConfigureAwait(false);
        own.Enlist(this, () => new StagedAppends(this)).Add(stream, expectedVersion, staged, planned);
        return planned;
    }

    // Checks every staged append of one unit of work against the streams (and the appends staged before it), under the
    // lock the commit holds: a conflict throws before anything is written. Returns the appends to apply (an idempotent
    // retry of a stored append is not applied again).
    private List<int> CheckStaged(List<(string Stream, ExpectedVersion Expected, Envelope[] Events, long? Planned)> appends, List<(string Id, long Position)> checkpoints)
    {
        foreach (var (id, position) in checkpoints)
        {
            if (_checkpoints.TryGetValue(id, out var stored) && stored >= position)
            {
                throw new CheckpointConflictException(id, position);
            }
        }

        var planned = new Dictionary<string, long>(StringComparer.Ordinal);
        var apply = new List<int>(appends.Count);
        for (var i = 0; i < appends.Count; i++)
        {
            var (stream, expected, events, promised) = appends[i];
            _streams.TryGetValue(stream, out var state);
            var stagedBefore = planned.TryGetValue(stream, out var plannedVersion);
            var current = stagedBefore ? plannedVersion : state?.CurrentVersion ?? 0;
            if (events.Length > 0 && !stagedBefore && state is not null && TryGetIdempotentResult(stream, state, expected, events, out var original))
            {
                EnlistedAppends.ThrowUnlessAsPromised(stream, expected, current, original.StreamVersion, promised);
                continue;
            }

            if (!expected.IsSatisfiedBy(current))
            {
                throw new ConcurrencyException(stream, expected, current);
            }

            if (events.Length > 0)
            {
                planned[stream] = (stagedBefore ? plannedVersion : state?.LastVersion ?? 0) + events.Length;
                EnlistedAppends.ThrowUnlessAsPromised(stream, expected, current, planned[stream], promised);
                apply.Add(i);
            }
        }

        return apply;
    }

    // Applies what CheckStaged passed, under the same hold of the lock; true when it appended (readers are then woken, once
    // the lock is released).
    private bool ApplyStaged(List<(string Stream, ExpectedVersion Expected, Envelope[] Events, long? Planned)> appends, List<int> apply, List<(string Id, long Position)> checkpoints)
    {
        var now = Internal.StoredTime.Of(_options.TimeProvider.GetUtcNow());
        foreach (var i in apply)
        {
            var (stream, _, events, _) = appends[i];
            _streams.TryGetValue(stream, out var state);
            AppendUnderLock(stream, state, events, now);
        }

        foreach (var (id, position) in checkpoints)
        {
            _checkpoints[id] = position;
        }

        return apply.Count > 0;
    }

    // now: the append's time as every engine keeps it (StoredTime), so an event's RecordedAt reads back the same on each.
    private AppendResult AppendUnderLock(string stream, StreamState? state, IReadOnlyList<Envelope> events, DateTimeOffset now)
    {
        state ??= _streams[stream] = new StreamState();
        foreach (var envelope in events)
        {
            var recorded = new RecordedEvent(stream, state.LastVersion + 1, _all.Count + 1, now, Copy(envelope));
            _all.Add(recorded);
            state.Events.Add(recorded);
            state.VersionsById[recorded.EventId] = recorded.Version;
        }

        return new AppendResult(state.LastVersion, _all[^1].Position);
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<RecordedEvent> ReadStreamAsync(
        string stream,
        ReadDirection direction = ReadDirection.Forward,
        long fromVersion = 1,
        int maxCount = int.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ReadValidation.ValidateStreamRead(stream, fromVersion, maxCount);

        RecordedEvent[] page;
        lock (_gate)
        {
            if (!_streams.TryGetValue(stream, out var state) || maxCount == 0)
            {
                yield break;
            }

            // Events up to the deletion point stay stored (for idempotency checks) but are no longer readable.
            var first = state.DeletedUpTo + 1;
            if (direction == ReadDirection.Forward)
            {
                var start = Math.Max(fromVersion, first);
                var count = (int)Math.Min(maxCount, Math.Max(0, state.LastVersion - start + 1));
                page = count == 0 ? [] : state.Events.GetRange((int)(start - 1), count).ToArray();
            }
            else
            {
                var end = Math.Min(fromVersion, state.LastVersion);
                var count = (int)Math.Min(maxCount, Math.Max(0, end - first + 1));
                page = count == 0 ? [] : state.Events.GetRange((int)(end - count), count).ToArray();
                Array.Reverse(page);
            }
        }

        foreach (var recorded in page)
        {
            cancellationToken.ThrowIfCancellationRequested();
            yield return recorded;
        }

        await Task.CompletedTask.ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<RecordedEvent> ReadAllAsync(
        long fromPositionExclusive = 0,
        EventFilter? filter = null,
        int maxCount = int.MaxValue,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ReadValidation.ValidateAllRead(fromPositionExclusive, maxCount);

        var matcher = EventFilterMatcher.Create(filter);
        var next = fromPositionExclusive; // positions are list index + 1, so the next event sits at index `next`
        var remaining = maxCount;
        var chunk = new List<RecordedEvent>(ReadChunk);
        while (remaining > 0)
        {
            cancellationToken.ThrowIfCancellationRequested();
            chunk.Clear();
            lock (_gate)
            {
                // Read under the lock in chunks: the list may grow (and reallocate) while a reader is suspended.
                while (next < _all.Count && chunk.Count < ReadChunk && chunk.Count < remaining)
                {
                    var recorded = _all[(int)next++];
                    if (!IsDeleted(recorded) && matcher.Matches(recorded))
                    {
                        chunk.Add(recorded);
                    }
                }
            }

            if (chunk.Count == 0)
            {
                yield break;
            }

            foreach (var recorded in chunk)
            {
                yield return recorded;
                remaining--;
            }
        }

        await Task.CompletedTask.ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask<long> GetLastPositionAsync(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return ValueTask.FromResult((long)_all.Count);
        }
    }

    /// <inheritdoc />
    public ValueTask<long> GetStreamVersionAsync(string stream, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        lock (_gate)
        {
            return ValueTask.FromResult(_streams.TryGetValue(stream, out var state) ? state.CurrentVersion : 0);
        }
    }

    /// <inheritdoc />
    public ValueTask DeleteStreamAsync(string stream, ExpectedVersion expectedVersion, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        AppendValidation.ValidateExpectedVersion(expectedVersion);
        lock (_gate)
        {
            _streams.TryGetValue(stream, out var state);
            var current = state?.CurrentVersion ?? 0;
            if (!expectedVersion.IsSatisfiedBy(current))
            {
                throw new ConcurrencyException(stream, expectedVersion, current);
            }

            if (state is not null)
            {
                state.DeletedUpTo = state.LastVersion;
                state.Deletions.Add(state.LastVersion);
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken = default)
    {
        Task signal;
        lock (_gate)
        {
            if (_all.Count > afterPosition)
            {
                return ValueTask.CompletedTask;
            }

            signal = _appended.Next;
        }

        return new ValueTask(signal.WaitAsync(cancellationToken));
    }

    /// <inheritdoc />
    public ValueTask<long?> GetCheckpointAsync(string subscriptionId, CancellationToken cancellationToken = default)
    {
        return ValueTask.FromResult(CheckpointValidation.CanBeStored(subscriptionId) && _checkpoints.TryGetValue(subscriptionId, out var position) ? position : (long?)null);
    }

    /// <inheritdoc />
    public ValueTask SetCheckpointAsync(string subscriptionId, long position, CancellationToken cancellationToken = default)
    {
        CheckpointValidation.Validate(subscriptionId, position);
        _checkpoints[subscriptionId] = position;
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask SetCheckpointAsync(string subscriptionId, long position, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        CheckpointValidation.Validate(subscriptionId, position);
        // Staged with the appends, checked under the same lock: a checkpoint moves only forward, or the unit of work fails.
        InMemoryUnitOfWork.Of(unitOfWork).Enlist(this, () => new StagedAppends(this)).AddCheckpoint(subscriptionId, position);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask<Snapshot?> LoadSnapshotAsync(string stream, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        return ValueTask.FromResult(_snapshots.TryGetValue(stream, out var snapshot) ? snapshot : null);
    }

    /// <inheritdoc />
    public ValueTask SaveSnapshotAsync(Snapshot snapshot, CancellationToken cancellationToken = default)
    {
        SnapshotValidation.Validate(snapshot);
        var stored = Copy(snapshot);
        _snapshots.AddOrUpdate(snapshot.Stream, stored, (_, existing) => existing.Version > stored.Version ? existing : stored);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask SaveSnapshotAsync(Snapshot snapshot, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        SnapshotValidation.Validate(snapshot);
        var stored = Copy(snapshot);
        InMemoryUnitOfWork.Of(unitOfWork).Enlist(_snapshots, () => new InMemoryWrites(_snapshots))
            .Add(() => _snapshots.AddOrUpdate(stored.Stream, stored, (_, existing) => existing.Version > stored.Version ? existing : stored));
        return ValueTask.CompletedTask;
    }


    // Stores its own copy, so a caller reusing its body array or header dictionary cannot change history; its time as every
    // engine keeps it, so an event reads back the same on each.
    private static Envelope Copy(Envelope envelope) => envelope with
    {
        Time = Internal.StoredTime.Of(envelope.Time),
        Body = envelope.Body.ToArray(),
        Headers = envelope.Headers.Count == 0 ? envelope.Headers : envelope.Headers.ToFrozenDictionary(StringComparer.Ordinal),
    };

    // Its own copy of the state, and its time as every engine keeps it, so a snapshot reads back the same on each.
    private static Snapshot Copy(Snapshot snapshot) => snapshot with { State = snapshot.State.ToArray(), CreatedAt = Internal.StoredTime.Of(snapshot.CreatedAt) };

    private static bool SameContent(Envelope stored, Envelope sent) =>
        string.Equals(stored.MessageType, sent.MessageType, StringComparison.Ordinal) && stored.Body.Span.SequenceEqual(sent.Body.Span);

    private bool IsDeleted(RecordedEvent recorded) => recorded.Version <= _streams[recorded.Stream].DeletedUpTo;

    private bool TryGetIdempotentResult(string stream, StreamState state, ExpectedVersion expected, IReadOnlyList<Envelope> events, out AppendResult result)
    {
        result = null!;
        if (!state.VersionsById.TryGetValue(events[0].MessageId, out var start))
        {
            foreach (var envelope in events)
            {
                if (state.VersionsById.TryGetValue(envelope.MessageId, out var version))
                {
                    throw new ConcurrencyException(stream, expected, state.CurrentVersion,
                        $"The event id {envelope.MessageId} is already stored at version {version}, but not as part of the same append.");
                }
            }

            return false;
        }

        var place = expected.IsExact ? expected.Value + 1 : expected.IsNoStream ? state.StartVersionOfLife(start) : start;
        if (start != place)
        {
            throw new ConcurrencyException(stream, expected, state.CurrentVersion,
                $"The event id {events[0].MessageId} is already stored at version {start}, not where this append would put it.");
        }

        for (var i = 0; i < events.Count; i++)
        {
            var version = start + i;
            var stored = version <= state.LastVersion ? state.Events[(int)(version - 1)] : null;
            if (stored is null || stored.EventId != events[i].MessageId)
            {
                throw new ConcurrencyException(stream, expected, state.CurrentVersion,
                    "Some of the event ids were already appended, but not as this same batch.");
            }

            if (!SameContent(stored.Envelope, events[i]))
            {
                throw new ConcurrencyException(stream, expected, state.CurrentVersion,
                    $"The event id {events[i].MessageId} is already stored with another type or body.");
            }
        }

        var last = state.Events[(int)(start + events.Count - 2)];
        result = new AppendResult(last.Version, last.Position);
        return true;
    }

    // The appends one unit of work staged on this store; checked, then applied, all or none, at its commit.
    private sealed class StagedAppends(InMemoryEventStore store) : IInMemoryEnlistment
    {
        private readonly List<(string Stream, ExpectedVersion Expected, Envelope[] Events, long? Planned)> _appends = [];
        private readonly List<(string Id, long Position)> _checkpoints = [];
        private List<int>? _apply;
        private bool _wrote;

        public object Owner => store;

        public Lock Gate => store._gate;

        public long GateOrder => store._gateOrder;

        public void Add(string stream, ExpectedVersion expected, Envelope[] events, long? planned)
        {
            lock (_appends)
            {
                _appends.Add((stream, expected, events, planned));
            }
        }

        public void AddCheckpoint(string id, long position)
        {
            lock (_appends)
            {
                _checkpoints.Add((id, position));
            }
        }

        public void Check() => _apply = store.CheckStaged(_appends, _checkpoints);

        public void Apply() => _wrote = store.ApplyStaged(_appends, _apply!, _checkpoints);

        public void Applied()
        {
            if (_wrote)
            {
                store._appended.Pulse();
            }
        }
    }

    private sealed class StreamState
    {
        public List<RecordedEvent> Events { get; } = [];

        public Dictionary<Guid, long> VersionsById { get; } = [];

        public long LastVersion => Events.Count;

        /// <summary>Every version up to this one was soft-deleted.</summary>
        public long DeletedUpTo { get; set; }

        /// <summary>Every deletion point so far (each the stream's last version when it was deleted).</summary>
        public HashSet<long> Deletions { get; } = [];

        public long CurrentVersion => LastVersion > DeletedUpTo ? LastVersion : 0;

        // A NoStream append lands at the first version of a "life" of the stream: 1, or right after a deletion.
        public long StartVersionOfLife(long version) => version == 1 || Deletions.Contains(version - 1) ? version : -1;
    }
}
