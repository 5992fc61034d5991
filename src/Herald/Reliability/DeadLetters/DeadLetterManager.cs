using System.Collections.Concurrent;
using Herald.Hosting;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// What operators do with dead letters: list and filter them, inspect one, take one or all matching back to where they came
/// from, purge, count. A retry takes a dead letter back by its <see cref="DeadLetter.Origin"/>: an endpoint's is sent back
/// to its queue, a projection's is applied to the projection again; one whose origin cannot take it back (a stream
/// processor's) is refused and stays. A retried dead letter is deleted only once that is done (a projection's in the same
/// unit of work as the event's writes, so its event is applied once); when it fails it stays, with its retry count raised.
/// Resolve it from DI (<c>AddHerald</c> registers it).
/// </summary>
public sealed class DeadLetterManager
{
    private readonly IDeadLetterStore _store;
    private readonly DeadLetterRetryTargets _targets;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly DeadLetterMonitor? _monitor;
    private readonly int _batchSize;

    // The dead letters this manager is sending back now: a second retry of one of them (a double click, a retry-all
    // meeting a retry-one) sends nothing, instead of sending the message again before the first retry deleted it.
    private readonly ConcurrentDictionary<Guid, byte> _retrying = new();

    /// <summary>Creates a manager over the store, sending retried messages of endpoints through the transport (those of other origins are refused).</summary>
    public DeadLetterManager(IDeadLetterStore store, ITransport transport, TimeProvider timeProvider, ILogger<DeadLetterManager>? logger = null)
        : this(store, transport, timeProvider, logger, monitor: null, batchSize: 100)
    {
    }

    /// <summary><paramref name="targets"/>: where the dead letters of origins other than an endpoint go back to (the projection host's).</summary>
    internal DeadLetterManager(
        IDeadLetterStore store, ITransport transport, TimeProvider timeProvider, ILogger? logger, DeadLetterMonitor? monitor, int batchSize, IEnumerable<IDeadLetterRetryTarget>? targets = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(timeProvider);
        _store = store;
        _targets = new DeadLetterRetryTargets([new TransportRetryTarget(transport, timeProvider), .. targets ?? []]);
        _timeProvider = timeProvider;
        _logger = logger ?? NullLogger.Instance;
        _monitor = monitor;
        _batchSize = batchSize;
    }

    /// <summary>Lists one page of the dead letters matching the query (all of them, 100 per page, by default); the page carries the query of the next.</summary>
    public async ValueTask<DeadLetterPage> ListAsync(DeadLetterQuery? query = null, CancellationToken cancellationToken = default)
    {
        query ??= DeadLetterQuery.All;
        var items = await _store.ListAsync(query, cancellationToken).ConfigureAwait(false);
        var next = items.Count == query.Limit ? query with { After = items[^1].Id } : null;
        return new DeadLetterPage(items, next);
    }

    /// <summary>Returns one dead letter, or null.</summary>
    public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) => _store.GetAsync(id, cancellationToken);

    /// <summary>Counts the dead letters matching the query (all by default).</summary>
    public ValueTask<long> CountAsync(DeadLetterQuery? query = null, CancellationToken cancellationToken = default) =>
        _store.CountAsync(query ?? DeadLetterQuery.All, cancellationToken);

    /// <summary>
    /// Takes one dead letter back to where it came from and deletes it once that is done: an endpoint's envelope, unchanged
    /// but for a fresh delivery count (and without the failure headers of its earlier attempts), is sent back to its queue;
    /// a projection's event is applied to the projection again, in a unit of work of its read models that also deletes the
    /// dead letter (its checkpoint stays where it is). When that fails the dead letter stays and its retry count goes up; when
    /// its origin cannot take it back (a stream processor's, an event subscription's) nothing is done, it stays with the
    /// reason as its last retry error, and the outcome is <see cref="DeadLetterRetryOutcome.Refused"/>. While this manager is
    /// retrying it already, it does nothing and reports <see cref="DeadLetterRetryOutcome.NotFound"/>; so does a projection's
    /// retry that another retry (of another process) beat to it, its unit of work rolled back.
    /// </summary>
    public async ValueTask<DeadLetterRetryOutcome> RetryAsync(Guid id, CancellationToken cancellationToken = default)
    {
        var outcome = await RetryOneAsync(id, cancellationToken).ConfigureAwait(false);
        if (outcome.Endpoint is { } endpoint)
        {
            await RefreshAsync([endpoint], cancellationToken).ConfigureAwait(false);
        }

        return outcome.Outcome;
    }

    /// <summary>
    /// Retries every dead letter matching the query (filters only; paging is handled here) that failed before the retry-all
    /// began. The matching ids are taken first, so messages that fail again while this runs are not picked up twice, and
    /// dead letters that keep coming meanwhile (an endpoint still failing) neither keep it running nor are retried by it;
    /// running it again retries those left.
    /// </summary>
    public async ValueTask<DeadLetterRetryResult> RetryAllAsync(DeadLetterQuery? query = null, CancellationToken cancellationToken = default)
    {
        var ids = new List<Guid>();
        var page = FailedBeforeNow(query, olderThan: null);
        while (true)
        {
            var items = await _store.ListAsync(page, cancellationToken).ConfigureAwait(false);
            ids.AddRange(items.Select(d => d.Id));
            if (items.Count < page.Limit)
            {
                break;
            }

            page = page with { After = items[^1].Id };
        }

        int succeeded = 0, failed = 0, refused = 0;
        var endpoints = new HashSet<string>(StringComparer.Ordinal);
        foreach (var id in ids)
        {
            var (outcome, endpoint) = await RetryOneAsync(id, cancellationToken).ConfigureAwait(false);
            if (endpoint is not null)
            {
                endpoints.Add(endpoint);
            }

            switch (outcome)
            {
                case DeadLetterRetryOutcome.Retried:
                    succeeded++;
                    break;
                case DeadLetterRetryOutcome.Failed:
                    failed++;
                    break;
                case DeadLetterRetryOutcome.Refused:
                    refused++;
                    break;
            }
        }

        await RefreshAsync(endpoints, cancellationToken).ConfigureAwait(false);
        return new DeadLetterRetryResult(succeeded, failed) { Refused = refused };
    }

    /// <summary>Deletes the dead letters matching the query (filters only) that failed before the purge began (or before <paramref name="olderThan"/>); returns how many.</summary>
    public async ValueTask<long> PurgeAsync(DeadLetterQuery? query = null, DateTimeOffset? olderThan = null, CancellationToken cancellationToken = default)
    {
        // Only what failed before it began: when another deleter (a trim, a retry) takes some of what matched, the count
        // below would otherwise leave room for dead letters that failed after it began, which nobody asked to purge.
        var filter = FailedBeforeNow(query, olderThan);

        // Bounded by what matched when it began: dead letters that keep coming while it runs (an endpoint still failing)
        // would otherwise keep it deleting for as long as they come.
        var matched = await _store.CountAsync(filter, cancellationToken).ConfigureAwait(false);
        long total = 0;
        while (total < matched)
        {
            var deleted = await _store.DeleteManyAsync(filter with { Limit = (int)Math.Min(_batchSize, matched - total) }, cancellationToken).ConfigureAwait(false);
            total += deleted;

            // A batch that another deleter (a second purge, the retention) took first deletes nothing here (PostgreSQL skips
            // the rows it waited for) though more may match: only none left ends the purge early.
            if (deleted == 0 && (await _store.ListAsync(filter with { Limit = 1 }, cancellationToken).ConfigureAwait(false)).Count == 0)
            {
                break;
            }
        }

        Log.DeadLettersPurged(_logger, total);
        if (_monitor is not null)
        {
            await RefreshAsync(filter.Endpoint is { } endpoint ? [endpoint] : _monitor.Counts.Keys, cancellationToken).ConfigureAwait(false);
        }

        return total;
    }

    /// <summary>
    /// Deletes <paramref name="endpoint"/>'s dead letters past a retention now: those that last failed longer than
    /// <paramref name="maxAge"/> ago, then the oldest beyond <paramref name="maxCount"/>; returns how many. The host does
    /// this in the background from <see cref="DeadLetterOptions.MaxAge"/> and <see cref="DeadLetterOptions.MaxCount"/>.
    /// </summary>
    public async ValueTask<long> TrimAsync(string endpoint, TimeSpan? maxAge, int? maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        if (maxAge is { } age)
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(age, TimeSpan.Zero, nameof(maxAge));
        }

        if (maxCount is { } count)
        {
            ArgumentOutOfRangeException.ThrowIfNegative(count, nameof(maxCount));
        }

        var trimmed = await DeadLetterRetention.TrimAsync(_store, endpoint, maxAge, maxCount, _batchSize, _timeProvider.GetUtcNow(), cancellationToken).ConfigureAwait(false);
        if (_monitor is not null)
        {
            await _monitor.RefreshAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }

        return trimmed;
    }

    /// <summary>
    /// The query's filters, in batches, narrowed to the dead letters that failed before now (one of this millisecond counts
    /// as before) and before <paramref name="olderThan"/>: what a retry-all or a purge that begins now is asked to take.
    /// </summary>
    private DeadLetterQuery FailedBeforeNow(DeadLetterQuery? query, DateTimeOffset? olderThan)
    {
        var cutoff = _timeProvider.GetUtcNow().AddMilliseconds(1);
        if (olderThan is { } older && older < cutoff)
        {
            cutoff = older;
        }

        var filter = (query ?? DeadLetterQuery.All) with { After = null, Limit = _batchSize };
        return filter.FailedBefore is null || cutoff < filter.FailedBefore ? filter with { FailedBefore = cutoff } : filter;
    }

    private async ValueTask<(DeadLetterRetryOutcome Outcome, string? Endpoint)> RetryOneAsync(Guid id, CancellationToken cancellationToken)
    {
        if (!_retrying.TryAdd(id, 0))
        {
            return (DeadLetterRetryOutcome.NotFound, null);
        }

        try
        {
            return await RetryClaimedAsync(id, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _retrying.TryRemove(id, out _);
        }
    }

    private async ValueTask<(DeadLetterRetryOutcome Outcome, string? Endpoint)> RetryClaimedAsync(Guid id, CancellationToken cancellationToken)
    {
        if (await _store.GetAsync(id, cancellationToken).ConfigureAwait(false) is not { } deadLetter)
        {
            return (DeadLetterRetryOutcome.NotFound, null);
        }

        var envelope = deadLetter.Envelope;
        bool deleted;
        try
        {
            deleted = await _targets.For(deadLetter).RetryAsync(deadLetter, cancellationToken).ConfigureAwait(false);
        }
        catch (DeadLetterNotFoundException gone) when (gone.DeadLetterId == deadLetter.Id)
        {
            // Another retry (of another process) took it back first, and this one's unit of work wrote nothing.
            Log.DeadLetterRetriedElsewhere(_logger, deadLetter.Id, envelope.MessageId, envelope.MessageType, deadLetter.Endpoint);
            return (DeadLetterRetryOutcome.NotFound, deadLetter.Endpoint);
        }
        catch (DeadLetterRetryRefusedException refusal)
        {
            // Nothing was done: the reason goes on the record, where the operator who asked sees it.
            Log.DeadLetterRetryRefused(_logger, deadLetter.Id, envelope.MessageId, envelope.MessageType, deadLetter.Endpoint, refusal.Message);
            await _store.RecordRetryFailureAsync(deadLetter.Id, refusal.Message, _timeProvider.GetUtcNow(), cancellationToken).ConfigureAwait(false);
            return (DeadLetterRetryOutcome.Refused, deadLetter.Endpoint);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.DeadLetterRetryFailed(_logger, ex, deadLetter.Id, envelope.MessageId, envelope.MessageType, deadLetter.Endpoint);
            await _store.RecordRetryFailureAsync(deadLetter.Id, $"{ex.GetType().FullName}: {ex.Message}", _timeProvider.GetUtcNow(), cancellationToken).ConfigureAwait(false);
            return (DeadLetterRetryOutcome.Failed, deadLetter.Endpoint);
        }

        // Taken back: only now is it safe to forget the dead letter (a projection's retry deleted it in its unit of work). If
        // this delete fails the message was still sent back, and a second retry would send it again: a duplicate the
        // endpoint's inbox absorbs.
        if (!deleted)
        {
            await _store.DeleteAsync(deadLetter.Id, cancellationToken).ConfigureAwait(false);
        }

        Log.DeadLetterRetried(_logger, deadLetter.Id, envelope.MessageId, envelope.MessageType, deadLetter.Endpoint);
        return (DeadLetterRetryOutcome.Retried, deadLetter.Endpoint);
    }

    private async ValueTask RefreshAsync(IEnumerable<string> endpoints, CancellationToken cancellationToken)
    {
        if (_monitor is null)
        {
            return;
        }

        foreach (var endpoint in endpoints.ToList())
        {
            await _monitor.RefreshAsync(endpoint, cancellationToken).ConfigureAwait(false);
        }
    }
}
