using Herald.Hosting;
using System.Collections.Concurrent;
using System.Text.Json;
using System.Text.Json.Serialization;
using Herald.Internal;
using Herald.Messages;
using Herald.Persistence;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Reliability.Idempotency;

/// <summary>
/// Runs an operation once per key: the first caller runs it under the key's lock and stores its result (as JSON) for the
/// ttl; concurrent callers wait for that result (woken at once in this process, polling the store with backoff across
/// processes, for at most <see cref="IdempotencyOptions.WaitTimeout"/>); later callers get the stored result. A failed
/// operation frees the key, so the next caller runs it. The lock is renewed every third of
/// <see cref="IdempotencyOptions.LockTimeout"/> while the operation runs; if it is lost anyway (another caller took it),
/// the operation's token fires and its result is not stored. A result the store fails to take is tried again, with the lock
/// renewed between tries, for up to <see cref="IdempotencyOptions.CompletionTimeout"/>; then the caller gets it unstored. A
/// result that cannot be written as JSON is returned to its caller, and later callers get a <see cref="HeraldException"/>
/// instead of running the operation again.
/// </summary>
public sealed class IdempotencyService
{
    /// <summary>Longest accepted key.</summary>
    public const int MaxKeyLength = 200;


    private readonly ConcurrentDictionary<string, TaskCompletionSource> _signals = new(StringComparer.Ordinal);
    private readonly IIdempotencyStore _store;
    private readonly TimeProvider _timeProvider;
    private readonly IdempotencyOptions _options;
    private readonly JsonSerializerOptions _json;
    private readonly ILogger _logger;

    /// <summary>Creates the service over the store. Results use the serializer's JSON options when it is the System.Text.Json one, web defaults otherwise, with fields and NaN/Infinity included.</summary>
    public IdempotencyService(
        IIdempotencyStore store,
        TimeProvider timeProvider,
        IOptions<IdempotencyOptions>? options = null,
        IMessageSerializer? serializer = null,
        ILogger<IdempotencyService>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(timeProvider);
        _store = store;
        _timeProvider = timeProvider;
        _options = options?.Value ?? new IdempotencyOptions();
        var problems = _options.Validate().ToList();
        if (problems.Count > 0)
        {
            throw new ArgumentException(string.Join(" ", problems), nameof(options));
        }

        _json = ResultOptions((serializer as SystemTextJsonMessageSerializer)?.Options);
        _logger = logger ?? (ILogger)NullLogger.Instance;
    }

    /// <summary>
    /// Runs <paramref name="operation"/> unless it already ran (or is running) for <paramref name="key"/>, and returns its
    /// result, stored for <paramref name="ttl"/>. Throws <see cref="ArgumentException"/> for an empty, blank or over-long
    /// key and <see cref="IdempotencyTimeoutException"/> when another caller's run outlasts the wait timeout.
    /// </summary>
    public async ValueTask<T> ExecuteAsync<T>(string key, Func<CancellationToken, ValueTask<T>> operation, TimeSpan ttl, CancellationToken cancellationToken = default)
    {
        ValidateKey(key);
        ArgumentNullException.ThrowIfNull(operation);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(ttl, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        // The store keeps the result until now + ttl: a ttl past the last representable time would fail every completion
        // after the operation ran, so it is refused before.
        ArgumentOutOfRangeException.ThrowIfGreaterThan(ttl, DateTimeOffset.MaxValue - now - _options.WaitTimeout - _options.CompletionTimeout);
        var deadline = now + _options.WaitTimeout;
        var poll = _options.MinPollInterval;
        TaskCompletionSource? signal = null;
        try
        {
            while (true)
            {
                var found = await _store.TryAcquireAsync(key, _options.LockTimeout, cancellationToken).ConfigureAwait(false);
                if (found.Status == IdempotencyAcquireStatus.Locked && signal is null)
                {
                    // Register for the local wake-up, then look once more: a holder finishing in between is not missed.
                    signal = _signals.GetOrAdd(key, static _ => new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
                    found = await _store.TryAcquireAsync(key, _options.LockTimeout, cancellationToken).ConfigureAwait(false);
                }

                switch (found.Status)
                {
                    case IdempotencyAcquireStatus.Completed:
                        return Deserialize<T>(found.Result, key);
                    case IdempotencyAcquireStatus.Acquired:
                        return await RunAsync(key, found.LockToken, operation, ttl, cancellationToken).ConfigureAwait(false);
                }

                var remaining = deadline - _timeProvider.GetUtcNow();
                if (remaining <= TimeSpan.Zero)
                {
                    throw new IdempotencyTimeoutException(key, _options.WaitTimeout);
                }

                await WaitAsync(signal!.Task, poll < remaining ? poll : remaining, cancellationToken).ConfigureAwait(false);
                if (signal.Task.IsCompleted)
                {
                    signal = null;
                }

                poll = poll * 2 > _options.MaxPollInterval ? _options.MaxPollInterval : poll * 2;
            }
        }
        finally
        {
            if (signal is not null)
            {
                // Whatever ended this caller's wait, wake the other local waiters so they look again themselves.
                Signal(key);
            }
        }
    }

    // Results are read back only here, so they also keep what plain System.Text.Json leaves out or cannot write: fields (a
    // value tuple's items; it was stored as {} and later callers got default values) and NaN and the infinities (it failed
    // to serialize, was not stored, and the operation ran again once the lock lapsed).
    private static JsonSerializerOptions ResultOptions(JsonSerializerOptions? messageOptions)
    {
        var options = messageOptions is null ? SystemTextJsonMessageSerializer.CreateDefaultOptions() : new JsonSerializerOptions(messageOptions);
        options.IncludeFields = true;
        options.NumberHandling |= JsonNumberHandling.AllowNamedFloatingPointLiterals;
        options.MakeReadOnly(populateMissingResolver: true);
        return options;
    }

    private static void ValidateKey(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (key.Length == 0)
        {
            throw new ArgumentException("The idempotency key is empty; give each operation a key that identifies it.", nameof(key));
        }

        if (string.IsNullOrWhiteSpace(key))
        {
            throw new ArgumentException("The idempotency key is only whitespace; give each operation a key that identifies it.", nameof(key));
        }

        if (key.Length > MaxKeyLength)
        {
            throw new ArgumentException($"The idempotency key is {key.Length} characters long; at most {MaxKeyLength} are allowed (hash longer keys).", nameof(key));
        }
    }

    private async ValueTask<T> RunAsync<T>(string key, Guid lockToken, Func<CancellationToken, ValueTask<T>> operation, TimeSpan ttl, CancellationToken cancellationToken)
    {
        T result;
        var renewal = new LeaseRenewal(
            ct => _store.RenewAsync(key, lockToken, _options.LockTimeout, ct),
            _options.LockTimeout,
            "idempotency_lock",
            _timeProvider,
            () => Log.IdempotencyLockTaken(_logger, key),
            ex => Log.IdempotencyRenewalFailed(_logger, ex, key),
            () => Log.IdempotencyLockRanOut(_logger, key),
            cancellationToken);
        try
        {
            result = await operation(renewal.Token).ConfigureAwait(false);
        }
        catch (Exception failure)
        {
            await renewal.DisposeAsync().ConfigureAwait(false);
            try
            {
                await _store.ReleaseAsync(key, lockToken, CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception releaseFailure)
            {
                Log.IdempotencyReleaseFailed(_logger, releaseFailure, key);
            }

            Signal(key);
            if (failure is OperationCanceledException && renewal.IsLost && !cancellationToken.IsCancellationRequested)
            {
                // Cancelled because another caller took the key, or may take it now: say so, rather than pose as the caller's own
                // cancellation.
                throw new LeaseLostException(renewal.RanOut
                    ? $"The idempotency lock of key '{key}' ran out while its operation ran, its renewals failing (the store could not be reached); the operation was cancelled, since another caller may take the key and run it too."
                    : $"The idempotency lock of key '{key}' was lost while its operation ran (another caller took the key); the operation was cancelled and its result not stored.");
            }

            throw;
        }

        await renewal.DisposeAsync().ConfigureAwait(false);
        byte[] bytes;
        try
        {
            bytes = JsonSerializer.SerializeToUtf8Bytes(result, _json);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // The operation took effect, but no later caller can be given its result (a cycle, a value no converter writes).
            // Left unstored, the lock lapsed and the next caller ran it again: stored as no bytes (never JSON), later callers
            // are told so instead.
            Log.IdempotencyResultNotSerializable(_logger, ex, key);
            bytes = [];
        }

        try
        {
            if (!await CompleteAsync(key, lockToken, bytes, ttl).ConfigureAwait(false))
            {
                Log.IdempotencyLockLost(_logger, key);
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // The operation took effect: its caller gets the result. Only later callers miss it once the lock expires.
            Log.IdempotencyResultNotStored(_logger, ex, key);
        }
        finally
        {
            Signal(key);
        }

        return result;
    }

    // Stored with retries while the lock is still this caller's, for up to CompletionTimeout (IdempotentCompletion).
    private ValueTask<bool> CompleteAsync(string key, Guid lockToken, byte[] result, TimeSpan ttl) =>
        IdempotentCompletion.StoreAsync(_store, key, lockToken, result, ttl, _options.LockTimeout, _options.CompletionTimeout, _timeProvider, (ex, pause) => Log.IdempotencyCompleteRetrying(_logger, ex, key, pause));

    private async ValueTask WaitAsync(Task signal, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using var timer = new CancellationTokenSource(timeout, _timeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(timer.Token, cancellationToken);
        try
        {
            await signal.WaitAsync(linked.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            // The poll interval passed: look at the store again.
        }
    }

    private T Deserialize<T>(ReadOnlyMemory<byte> bytes, string key)
    {
        if (bytes.IsEmpty)
        {
            throw new HeraldException(
                $"The operation with idempotency key '{key}' ran, but its result could not be written as JSON, so it cannot be returned; the operation is not run again while the key is kept.");
        }

        try
        {
            return JsonSerializer.Deserialize<T>(bytes.Span, _json)!;
        }
        catch (Exception ex) when (ex is JsonException or NotSupportedException)
        {
            // NotSupportedException: a type no converter creates (an interface, an abstract class without polymorphism set up).
            throw new HeraldException($"The stored result of idempotency key '{key}' cannot be read as {typeof(T).Name}: {ex.Message}", ex);
        }
    }

    private void Signal(string key)
    {
        if (_signals.TryRemove(key, out var signal))
        {
            signal.TrySetResult();
        }
    }
}
