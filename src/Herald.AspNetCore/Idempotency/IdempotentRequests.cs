using System.Globalization;
using System.Security.Claims;
using System.Security.Cryptography;
using System.Text;
using Herald.AspNetCore.Internal;
using Herald.AspNetCore.Problems;
using Herald.Internal;
using Herald.Reliability.Idempotency;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.AspNetCore.Idempotency;

/// <summary>
/// Runs an endpoint at most once per <c>Idempotency-Key</c> (IETF draft "The Idempotency-Key HTTP Header Field"), on Herald's
/// <see cref="IIdempotencyStore"/>: the first request takes the key's lock, runs, and its completed response (status,
/// <c>Content-Type</c>, <c>Location</c>, the other representation headers, body bytes) is stored with the SHA-256 fingerprint
/// of its method, target, body and media type before it is sent. The same key and request later get that response again
/// (<c>Idempotency-Replayed: true</c>); the same key with another request gets 422; a request arriving while the first still
/// runs gets 409 with <c>Retry-After</c>. A first attempt that throws, answers 5xx or a client error that says to retry
/// (<see cref="StoredResponse.IsStored"/>) releases the key, so a retry runs.
/// </summary>
internal sealed class IdempotentRequests(
    IIdempotencyStore store,
    TimeProvider timeProvider,
    IOptions<IdempotencyOptions> storeOptions,
    IOptions<HeraldHttpOptions> httpOptions,
    ILogger<IdempotentRequests> logger)
{
    private const string StoreKeyPrefix = "herald-http:";

    /// <summary>Runs <paramref name="next"/> under the request's key; the body is hashed up to <paramref name="bodyLimit"/> (the endpoint's guard), else the options' limit.</summary>
    public async Task InvokeAsync(HttpContext context, IdempotencyKeyOptions options, long? bodyLimit, RequestDelegate next)
    {
        var request = context.Request;
        var values = request.Headers[IdempotencyKeyHeader.Name];
        if (values.Count == 0)
        {
            if (options.Required)
            {
                await HttpProblems.WriteAsync(
                    context,
                    StatusCodes.Status400BadRequest,
                    "An Idempotency-Key header is required.",
                    $"This endpoint runs each operation once per {IdempotencyKeyHeader.Name}: send one unique key per operation, and the same key when you retry it.").ConfigureAwait(false);
                return;
            }

            await next(context).ConfigureAwait(false);
            return;
        }

        string? problem = null;
        var key = values.Count > 1 ? null : IdempotencyKeyHeader.Parse(values[0] ?? "", options.MaxKeyLength, out problem);
        if (key is null)
        {
            await HttpProblems.WriteAsync(
                context,
                StatusCodes.Status400BadRequest,
                "The Idempotency-Key header is not valid.",
                $"The {IdempotencyKeyHeader.Name} header is not valid: {problem ?? "it was sent more than once"}.").ConfigureAwait(false);
            return;
        }

        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        hash.AppendData(Encoding.UTF8.GetBytes($"{request.Method}\n{request.PathBase}{request.Path}{request.QueryString}\n"));
        var limit = bodyLimit ?? httpOptions.Value.MaxRequestBodyBytes;
        if (!await RequestBody.BufferAsync(context, limit, hash).ConfigureAwait(false))
        {
            await HttpProblems.WriteAsync(
                context,
                StatusCodes.Status413PayloadTooLarge,
                "The request body is too large.",
                $"This endpoint reads at most {limit} bytes of body.").ConfigureAwait(false);
            return;
        }

        var fingerprint = RequestFingerprint.Of(hash, request.ContentType);
        var storeKey = StoreKey(context, options.Scope, key);
        var found = await store.TryAcquireAsync(storeKey, storeOptions.Value.LockTimeout, context.RequestAborted).ConfigureAwait(false);
        switch (found.Status)
        {
            case IdempotencyAcquireStatus.Completed:
                if (StoredResponse.TryFromBytes(found.Result.Span) is not { } stored)
                {
                    // The key completed, so the operation is not run again; its response is unreadable, so it is not replayed.
                    Log.IdempotencyStoredResponseUnreadable(logger, request.Method, Path(context));
                    await HttpProblems.WriteAsync(
                        context,
                        StatusCodes.Status500InternalServerError,
                        "The stored response of this Idempotency-Key cannot be read.",
                        "The request with this key already ran, but its stored response is damaged; it is not run again.").ConfigureAwait(false);
                    return;
                }

                await ReplayAsync(context, stored, fingerprint).ConfigureAwait(false);
                return;
            case IdempotencyAcquireStatus.Locked:
                Log.IdempotencyInFlight(logger, request.Method, Path(context));
                await WriteInFlightAsync(context, options).ConfigureAwait(false);
                return;
        }

        await RunAsync(context, options, next, storeKey, found.LockToken, fingerprint).ConfigureAwait(false);
    }

    private async Task RunAsync(HttpContext context, IdempotencyKeyOptions options, RequestDelegate next, string storeKey, Guid lockToken, RequestFingerprint fingerprint)
    {
        var method = context.Request.Method;
        var path = Path(context);
        var originalFeature = context.Features.Get<IHttpResponseBodyFeature>()!;
        // Headers the endpoint sets as the response starts (OnStarting) are part of what is stored, not only of what is sent.
        var originalResponse = context.Features.Get<IHttpResponseFeature>()!;
        var starting = new ResponseStarting(originalResponse);
        using var captured = new ResponseCapture(originalFeature.Stream, options.MaxStoredResponseBytes, starting);
        var capture = new StreamResponseBodyFeature(captured, originalFeature);
        context.Features.Set<IHttpResponseBodyFeature>(capture);
        context.Features.Set<IHttpResponseFeature>(starting);
        // The lock must outlive a slow endpoint: renewed every third of its timeout, and a failed renewal again after a
        // twelfth (not a third), so a short store outage does not let the lock lapse under the running endpoint.
        var timeout = storeOptions.Value.LockTimeout;
        var renewal = new LeaseRenewal(
            ct => store.RenewAsync(storeKey, lockToken, timeout, ct),
            timeout,
            "idempotency_lock",
            timeProvider,
            () => Log.IdempotencyLockLost(logger, method, path),
            ex => Log.IdempotencyRenewalFailed(logger, ex, method, path),
            () => Log.IdempotencyLockRanOut(logger, method, path),
            context.RequestAborted);

        // The endpoint's token (RequestAborted) fires when the lock is lost too, as IdempotencyService cancels its operation:
        // it does not run on beside the request that took the key.
        var originalLifetime = context.Features.Get<IHttpRequestLifetimeFeature>();
        context.Features.Set<IHttpRequestLifetimeFeature>(new LeaseLifetimeFeature(originalLifetime, renewal.Token));
        context.Features.Set(new IdempotencyKeyFeature(storeKey));
        try
        {
            await next(context).ConfigureAwait(false);
            await capture.CompleteAsync().ConfigureAwait(false);
            await starting.FireAsync().ConfigureAwait(false);
        }
        catch (Exception failure)
        {
            starting.HandBack();
            context.Features.Set(originalResponse);
            context.Features.Set(originalFeature);
            context.Features.Set(originalLifetime);
            await renewal.DisposeAsync().ConfigureAwait(false);
            await ReleaseAsync(storeKey, lockToken, method, path).ConfigureAwait(false);
            if (failure is OperationCanceledException && renewal.IsLost && !context.RequestAborted.IsCancellationRequested && !context.Response.HasStarted)
            {
                // Cancelled because another request took the key: a retry gets that request's response once it finishes.
                context.Response.Clear();
                await WriteInFlightAsync(context, options).ConfigureAwait(false);
                return;
            }

            throw;
        }

        context.Features.Set(originalResponse);
        context.Features.Set(originalFeature);
        context.Features.Set(originalLifetime);
        await renewal.DisposeAsync().ConfigureAwait(false);
        var lost = renewal.IsLost;
        var response = context.Response;
        if (!StoredResponse.IsStored(response.StatusCode))
        {
            await ReleaseAsync(storeKey, lockToken, method, path).ConfigureAwait(false);
        }
        else if (captured.IsStreaming)
        {
            // Already sent as it was written (ResponseCapture), and not kept whole: not stored, so a retry runs again.
            Log.IdempotencyResponseTooLarge(logger, method, path, captured.Written, options.MaxStoredResponseBytes);
            await ReleaseAsync(storeKey, lockToken, method, path).ConfigureAwait(false);
            return;
        }
        else if (!lost)
        {
            await CompleteAsync(context, options, storeKey, lockToken, fingerprint, captured.Kept.ToArray()).ConfigureAwait(false);
        }

        if (captured.Kept.Length > 0)
        {
            await response.Body.WriteAsync(captured.Kept, context.RequestAborted).ConfigureAwait(false);
        }
    }

    private static async Task WriteInFlightAsync(HttpContext context, IdempotencyKeyOptions options)
    {
        context.Response.Headers.RetryAfter = Math.Max(1, (long)Math.Ceiling(options.RetryAfter.TotalSeconds)).ToString(CultureInfo.InvariantCulture);
        await HttpProblems.WriteAsync(
            context,
            StatusCodes.Status409Conflict,
            "A request with this Idempotency-Key is still being processed.",
            "Another request with the same key has not finished yet; retry after the Retry-After delay to get its response.").ConfigureAwait(false);
    }

    private async ValueTask CompleteAsync(HttpContext context, IdempotencyKeyOptions options, string storeKey, Guid lockToken, RequestFingerprint fingerprint, byte[] body)
    {
        var response = context.Response;
        var stored = new StoredResponse
        {
            Fingerprint = fingerprint.WithoutMediaType,
            FullFingerprint = fingerprint.Full,
            Status = response.StatusCode,
            ContentType = response.ContentType,
            Location = response.Headers.Location.Count > 0 ? response.Headers.Location.ToString() : null,
            Headers = StoredResponse.RepresentationOf(response.Headers),
            Body = body,
        };
        var method = context.Request.Method;
        var path = Path(context);
        try
        {
            // Stored before it is sent: a client that retries the moment it reads the response finds it. A failing store is
            // tried again, the lock renewed between tries, for up to CompletionTimeout (IdempotentCompletion), as IdempotencyService does.
            if (!await IdempotentCompletion.StoreAsync(
                    store,
                    storeKey,
                    lockToken,
                    stored.ToBytes(),
                    options.Expiration,
                    storeOptions.Value.LockTimeout,
                    storeOptions.Value.CompletionTimeout,
                    timeProvider,
                    (ex, pause) => Log.IdempotencyCompleteRetrying(logger, ex, method, path, pause)).ConfigureAwait(false))
            {
                Log.IdempotencyLockLost(logger, method, path);
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // The operation took effect and its caller gets the response; only a later retry misses it.
            Log.IdempotencyNotStored(logger, ex, method, path);
        }
    }

    private async Task ReplayAsync(HttpContext context, StoredResponse stored, RequestFingerprint fingerprint)
    {
        if (!fingerprint.Matches(stored))
        {
            Log.IdempotencyMismatch(logger, context.Request.Method, Path(context));
            await HttpProblems.WriteAsync(
                context,
                StatusCodes.Status422UnprocessableEntity,
                "The Idempotency-Key was already used for another request.",
                "This key belongs to a request with another method, target, body or media type; use a new key for a new operation.").ConfigureAwait(false);
            return;
        }

        Log.IdempotentReplay(logger, stored.Status, context.Request.Method, Path(context));
        var response = context.Response;
        response.StatusCode = stored.Status;
        if (stored.ContentType is not null)
        {
            response.ContentType = stored.ContentType;
        }

        if (stored.Location is not null)
        {
            response.Headers.Location = stored.Location;
        }

        stored.ApplyHeaders(response.Headers);
        response.Headers[IdempotencyKeyHeader.ReplayedHeader] = "true";
        // A bare status (no body) is left as the endpoint left it, so what the pipeline made of it the first time (a problem
        // body from UseStatusCodePages) it makes again: a Content-Length of 0 would stop that.
        if (stored.Body.Length > 0)
        {
            response.ContentLength = stored.Body.Length;
            await response.Body.WriteAsync(stored.Body, context.RequestAborted).ConfigureAwait(false);
        }
    }

    private async ValueTask ReleaseAsync(string storeKey, Guid lockToken, string method, string path)
    {
        try
        {
            await store.ReleaseAsync(storeKey, lockToken, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Log.IdempotencyReleaseFailed(logger, ex, method, path);
        }
    }

    // The client's key is hashed with its scope: any key length and character fits the store's 200-character keys, and one
    // user's key can never name another user's (or route's) entry.
    private static string StoreKey(HttpContext context, IdempotencyKeyScope scope, string key)
    {
        var user = User(context.User);
        var route = (context.GetEndpoint() as RouteEndpoint)?.RoutePattern.RawText ?? context.Request.Path.Value ?? "/";
        var scoped = scope == IdempotencyKeyScope.User
            ? $"user\n{user}\n{key}"
            : $"route\n{context.Request.Method} {route}\n{user}\n{key}";
        return StoreKeyPrefix + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(scoped)));
    }

    // A user known by its subject id only is marked with a control character names do not hold: such users do not all share
    // the empty name (and each other's keys), and none of them can take a name's keys.
    private static string User(ClaimsPrincipal principal) => HttpUser.Id(principal, out var bySubject) switch
    {
        null => "",
        var id when bySubject => "\u0001" + id,
        var id => id,
    };

    private static string Path(HttpContext context) => context.Request.Path.Value ?? "/";

    /// <summary>The request's lifetime while the endpoint runs under the key's lock: aborted with the request or the lock.</summary>
    private sealed class LeaseLifetimeFeature(IHttpRequestLifetimeFeature? inner, CancellationToken aborted) : IHttpRequestLifetimeFeature
    {
        public CancellationToken RequestAborted
        {
            get => aborted;
            set => aborted = value;
        }

        public void Abort() => inner?.Abort();
    }
}
