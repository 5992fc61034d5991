using System.Runtime.CompilerServices;
using Herald.Internal;
using Herald.Persistence;
using Herald.Redis.Internal;
using Herald.Reliability;
using Herald.Reliability.Inbox;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using StackExchange.Redis;

namespace Herald.Redis.Reliability;

/// <summary>
/// <see cref="IInbox"/> on Redis. Each mark is a hash <c>{prefix}{inbox}:{endpoint}:{messageId}</c> holding its logical
/// expiry in Unix milliseconds (<c>e</c>) and, while its unit of work is open, that unit of work's token (<c>t</c>); a
/// sorted set <c>{prefix}{inbox}:expiries</c> indexes marks by expiry for <see cref="DeleteExpiredAsync"/>. Every write is
/// one Lua script. The <c>{inbox}</c> hash tag keeps the marks and the index in one cluster slot, as the scripts need.
/// </summary>
/// <remarks>
/// <para>
/// Expiry follows the injected <see cref="TimeProvider"/>, never the server's clock: expiries are computed from the clock,
/// stored in the mark, and compared by the scripts with the caller's "now". Redis also deletes each mark by itself
/// (PEXPIRE) <see cref="RedisOptions.ExpiryGrace"/> after its expiry, measured on the server, as garbage collection only.
/// </para>
/// <para>
/// Redis is not the handler's database, so a mark cannot join the unit of work's transaction. A mark made in a unit of
/// work is first pending: it holds the id for <see cref="RedisOptions.InboxPendingTimeout"/>, renewed every third of it
/// while the unit of work is open (so a long handler keeps it, and a dead process's mark lapses); the unit of work's
/// commit makes it final for the whole window (<see cref="IUnitOfWork.OnCommitted"/>) and its rollback removes it
/// (<see cref="IUnitOfWork.OnRolledBack"/>). A concurrent mark of the same id waits for that outcome, as it would on a
/// SQL inbox's row lock: it returns false after a commit and true after a rollback, or once the pending mark lapsed
/// because its process died. So a crash between the mark and the commit never turns the redelivery into a skipped
/// "duplicate". <see cref="IsHandledAsync"/> counts final marks only, as a SQL inbox shows committed rows only.
/// </para>
/// <para>
/// StackExchange.Redis commands take no cancellation token: the token is honoured while connecting, before each script is
/// sent and while waiting for a pending mark; a sent script completes or fails with the client's timeout.
/// </para>
/// </remarks>
internal sealed class RedisInbox : IInbox
{
    // KEYS[1] mark, KEYS[2] index; ARGV now, expiry, token ('' for a final mark), gc ms.
    // Returns {1} marked, {0} a final mark or this unit of work's own pending one is live (duplicate), {2, expiry} another
    // unit of work's pending mark is live.
    private const string MarkScript = """
        local found = redis.call('HMGET', KEYS[1], 'e', 't')
        if found[1] and tonumber(found[1]) > tonumber(ARGV[1]) then
          if found[2] and found[2] ~= ARGV[3] then return {2, found[1]} end
          return {0}
        end
        redis.call('DEL', KEYS[1])
        if ARGV[3] == '' then
          redis.call('HSET', KEYS[1], 'e', ARGV[2])
        else
          redis.call('HSET', KEYS[1], 'e', ARGV[2], 't', ARGV[3])
        end
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
        local ttl = redis.call('PTTL', KEYS[2])
        if ttl < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
        return {1}
        """;

    // KEYS[1] mark, KEYS[2] index; ARGV now, token, final expiry, gc ms. Makes a pending mark final, unless another
    // holder's live mark replaced it. Returns 1 final, 0 left to the other holder.
    private const string CommitScript = """
        local found = redis.call('HMGET', KEYS[1], 'e', 't')
        if found[1] and found[2] ~= ARGV[2] and tonumber(found[1]) > tonumber(ARGV[1]) then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('HSET', KEYS[1], 'e', ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[4])
        redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
        local ttl = redis.call('PTTL', KEYS[2])
        if ttl < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
        return 1
        """;

    // KEYS[1] mark, KEYS[2] index; ARGV token. Removes the mark only while it is this unit of work's pending one.
    private const string RollbackScript = """
        if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], KEYS[1])
        return 1
        """;

    // KEYS[1] mark, KEYS[2] index; ARGV token, pending expiry, gc ms. Extends a pending mark while it is this unit of
    // work's. Returns 1 extended, 0 lost (made final by nobody else, removed, or replaced by another holder's mark).
    private const string RenewScript = """
        if redis.call('HGET', KEYS[1], 't') ~= ARGV[1] then return 0 end
        redis.call('HSET', KEYS[1], 'e', ARGV[2])
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call('ZADD', KEYS[2], ARGV[2], KEYS[1])
        return 1
        """;

    // KEYS[1] index; ARGV now, max count. Deletes marks whose stored expiry has passed (the index members are their keys,
    // all in the index's slot); a member whose mark was renewed meanwhile is re-scored instead. Returns how many went.
    private const string DeleteExpiredScript = """
        local now = tonumber(ARGV[1])
        local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
        local deleted = 0
        for _, mark in ipairs(members) do
          local expiry = redis.call('HGET', mark, 'e')
          if expiry and tonumber(expiry) > now then
            redis.call('ZADD', KEYS[1], expiry, mark)
          else
            redis.call('DEL', mark)
            redis.call('ZREM', KEYS[1], mark)
            deleted = deleted + 1
          end
        end
        return deleted
        """;

    private static readonly TimeSpan MinPoll = TimeSpan.FromMilliseconds(10);
    private static readonly TimeSpan MaxPoll = TimeSpan.FromMilliseconds(250);
    private static readonly RedisValue[] MarkFields = ["e", "t"];

    // One token per unit of work, so a second mark of an id in the unit of work that holds it pending is a duplicate (as its
    // own row is to a database transaction), instead of waiting for its own commit.
    private readonly ConditionalWeakTable<IUnitOfWork, string> _tokens = new();
    private readonly RedisConnection _connection;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly string _prefix;
    private readonly RedisKey _index;
    private readonly TimeSpan _grace;
    private readonly TimeSpan _pendingTimeout;

    public RedisInbox(RedisConnection connection, RedisOptions options, TimeProvider timeProvider, ILogger<RedisInbox>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(timeProvider);
        _connection = connection;
        _timeProvider = timeProvider;
        _logger = logger ?? (ILogger)NullLogger.Instance;
        _prefix = options.KeyPrefix + "{inbox}:";
        _index = RedisKeys.Build(_prefix, "expiries");
        _grace = options.ExpiryGrace;
        _pendingTimeout = options.InboxPendingTimeout;
    }

    public async ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        var key = MarkKey(endpoint, messageId);
        PendingMark? pending = null;
        if (unitOfWork is not null)
        {
            // Enlist before writing: a unit of work that can no longer take callbacks throws here, with nothing written.
            pending = new PendingMark(this, key, endpoint, messageId, window, unitOfWork);
            unitOfWork.OnCommitted(pending.CommitAsync);
            unitOfWork.OnRolledBack(pending.RollbackAsync);
        }

        var database = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        var poll = MinPoll;
        var waiting = false;
        var hold = pending is null ? window : Min(_pendingTimeout, window);
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var now = _timeProvider.GetUtcNow();
            var expiry = now + hold;
            pending?.Sending();
            var found = await database.ScriptEvaluateAsync(
                MarkScript,
                [key, _index],
                [now.ToUnixTimeMilliseconds(), expiry.ToUnixTimeMilliseconds(), pending?.Token ?? string.Empty, GarbageCollectionMilliseconds(hold)]).ConfigureAwait(false);
            switch ((int)found[0])
            {
                case 1:
                    pending?.Made(now + window, hold);
                    return true;
                case 0:
                    return false;
            }

            // Another unit of work holds a pending mark: wait for its commit or rollback, or for it to lapse.
            if (!waiting)
            {
                Log.InboxWaitingForPendingMark(_logger, messageId, endpoint);
                waiting = true;
            }

            var lapse = DateTimeOffset.FromUnixTimeMilliseconds((long)found[1]) - now;
            await Task.Delay(Min(poll, Max(lapse, TimeSpan.FromMilliseconds(1))), _timeProvider, cancellationToken).ConfigureAwait(false);
            poll = Min(poll * 2, MaxPoll);
        }
    }

    public async ValueTask<bool> IsHandledAsync(string endpoint, Guid messageId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        var database = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        var found = await database.HashGetAsync(MarkKey(endpoint, messageId), MarkFields).ConfigureAwait(false);
        return found[0].TryParse(out long expiry) && found[1].IsNull && expiry > _timeProvider.GetUtcNow().ToUnixTimeMilliseconds();
    }

    public async ValueTask<int> DeleteExpiredAsync(int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        var database = await _connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        var deleted = await database.ScriptEvaluateAsync(
            DeleteExpiredScript,
            [_index],
            [_timeProvider.GetUtcNow().ToUnixTimeMilliseconds(), maxCount]).ConfigureAwait(false);
        return (int)deleted;
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;

    private RedisKey MarkKey(string endpoint, Guid messageId) => RedisKeys.Build(_prefix, endpoint, ":" + messageId.ToString("N"));

    private long GarbageCollectionMilliseconds(TimeSpan ttl) => (long)Math.Ceiling((ttl + _grace).TotalMilliseconds);

    /// <summary>A mark made in a unit of work: made final by its commit, removed by its rollback.</summary>
    private sealed class PendingMark(RedisInbox inbox, RedisKey key, string endpoint, Guid messageId, TimeSpan window, IUnitOfWork unitOfWork)
    {
        private readonly Lock _gate = new();
        private DateTimeOffset? _finalExpiry;
        private LeaseRenewal? _renewal;
        private bool _sent;

        public string Token { get; } = inbox._tokens.GetValue(unitOfWork, static _ => Guid.NewGuid().ToString("N"));

        private DateTimeOffset? FinalExpiry
        {
            get
            {
                lock (_gate)
                {
                    return _finalExpiry;
                }
            }
        }

        /// <summary>The mark script is about to be sent: from here the pending mark may exist even if no reply comes.</summary>
        public void Sending()
        {
            lock (_gate)
            {
                _sent = true;
            }
        }

        /// <summary>
        /// The pending mark is written, holding the id for <paramref name="hold"/>, renewed until the unit of work ends; once
        /// committed it lasts until <paramref name="finalExpiry"/> (the window from the mark).
        /// </summary>
        public void Made(DateTimeOffset finalExpiry, TimeSpan hold)
        {
            var renewal = new LeaseRenewal(
                ct => RenewAsync(hold, ct),
                hold,
                "inbox_mark",
                inbox._timeProvider,
                () => Log.InboxPendingMarkLost(inbox._logger, messageId, endpoint),
                ex => Log.InboxPendingMarkRenewalFailed(inbox._logger, ex, messageId, endpoint),
                () => Log.InboxPendingMarkRanOut(inbox._logger, messageId, endpoint));
            lock (_gate)
            {
                _finalExpiry = finalExpiry;
                _renewal = renewal;
            }

            // The mark is outside the unit of work's transaction: the pipeline cancels the handlers when it is lost, and
            // confirms it just before the commit, refusing the commit when it is gone (issue 10).
            UnitOfWorkLeases.DependOn(unitOfWork, renewal);
        }

        public async ValueTask CommitAsync(CancellationToken cancellationToken)
        {
            if (FinalExpiry is not { } finalExpiry)
            {
                return;
            }

            await StopRenewingAsync().ConfigureAwait(false);

            try
            {
                var database = await inbox._connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
                // Run again when cut: the handler's writes are committed, and a pending mark left behind lapses, so the
                // message's redelivery would run again. The script is the same when run twice: it leaves a final mark.
                await RedisScripts.EvaluateAgainIfCutAsync(
                    database,
                    CommitScript,
                    [key, inbox._index],
                    [inbox._timeProvider.GetUtcNow().ToUnixTimeMilliseconds(), Token, finalExpiry.ToUnixTimeMilliseconds(), inbox.GarbageCollectionMilliseconds(window)]).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // The handler's writes are committed: failing the commit now would only run the handler again.
            catch (Exception ex) when (ex is not OperationCanceledException)
#pragma warning restore CA1031
            {
                Log.InboxCommitFailed(inbox._logger, ex, messageId, endpoint);
            }
        }

        public async ValueTask RollbackAsync(CancellationToken cancellationToken)
        {
            // Not only after Made: a script applied whose reply was lost (connection dropped) left a pending mark with this
            // token, which would otherwise hold off the retry for the whole pending timeout.
            bool sent;
            lock (_gate)
            {
                sent = _sent;
            }

            if (!sent)
            {
                return;
            }

            await StopRenewingAsync().ConfigureAwait(false);

            try
            {
                var database = await inbox._connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
                // Run again when cut: a pending mark left behind holds the retry off for the pending timeout.
                await RedisScripts.EvaluateAgainIfCutAsync(database, RollbackScript, [key, inbox._index], [Token]).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // The mark is pending, so it lapses by itself; the rollback itself must not fail for it.
            catch (Exception ex) when (ex is not OperationCanceledException)
#pragma warning restore CA1031
            {
                Log.InboxRollbackFailed(inbox._logger, ex, messageId, endpoint);
            }
        }

        private async ValueTask<bool> RenewAsync(TimeSpan hold, CancellationToken cancellationToken)
        {
            var database = await inbox._connection.GetDatabaseAsync(cancellationToken).ConfigureAwait(false);
            cancellationToken.ThrowIfCancellationRequested();
            var renewed = await database.ScriptEvaluateAsync(
                RenewScript,
                [key, inbox._index],
                [Token, (inbox._timeProvider.GetUtcNow() + hold).ToUnixTimeMilliseconds(), inbox.GarbageCollectionMilliseconds(hold)]).ConfigureAwait(false);
            return (int)renewed == 1;
        }

        private async ValueTask StopRenewingAsync()
        {
            LeaseRenewal? renewal;
            lock (_gate)
            {
                renewal = _renewal;
                _renewal = null;
            }

            if (renewal is not null)
            {
                await renewal.DisposeAsync().ConfigureAwait(false);
            }
        }
    }
}
