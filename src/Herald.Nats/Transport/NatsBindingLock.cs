using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.KeyValueStore;

namespace Herald.Nats.Transport;

/// <summary>
/// Keeps processes from changing one queue stream's sources at once. A binding reads the stream's sources and writes them
/// back with one more, and JetStream has no compare-and-set on a stream's configuration: two processes binding at once
/// lost one binding (two topics: the later write dropped the other's source) or left a source that copied nothing (one
/// topic: two updates adding it at once, seen on NATS 2.9). The lock is a key per stream in a small KV bucket, created
/// only while absent and deleted by its holder; the bucket's age limit removes a key whose holder died, after
/// <see cref="Lease"/> (<see cref="DefaultLease"/> unless a test shortens it).
/// </summary>
internal sealed class NatsBindingLock(NatsJSContext jetStream, string bucket, TimeSpan? lease = null)
{
    private static readonly TimeSpan FirstRetry = TimeSpan.FromMilliseconds(2);
    private static readonly TimeSpan LongestRetry = TimeSpan.FromMilliseconds(100);

    // The value of a held lock's key: who holds it, for an operator looking at the bucket.
    private static readonly string Owner = $"{Environment.MachineName}/{Environment.ProcessId}";

    private readonly SemaphoreSlim _opening = new(1, 1);
    private INatsKVStore? _store;

    /// <summary>How long a lock lasts at most by default: a binding holds it for three JetStream requests.</summary>
    public static TimeSpan DefaultLease { get; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a lock lasts at most: the bucket's age limit, which removes the key of a holder that died.</summary>
    public TimeSpan Lease { get; } = lease ?? DefaultLease;

    /// <summary>Waits until this process holds the lock of the stream; disposing the result releases it.</summary>
    public async ValueTask<Held> AcquireAsync(string stream, CancellationToken cancellationToken)
    {
        var retry = FirstRetry;
        var reopened = false;
        while (true)
        {
            var store = await StoreAsync(cancellationToken).ConfigureAwait(false);
            NatsResult<ulong> created;
            try
            {
                created = await store.TryCreateAsync(stream, Owner, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            catch (NatsException) when (!reopened && !cancellationToken.IsCancellationRequested)
            {
                // The bucket may be gone (deleted by an operator, or its server's storage lost): the client then asks for the
                // key's entry and gets no reply. Make the bucket again, once.
                Interlocked.CompareExchange(ref _store, null, store);
                reopened = true;
                continue;
            }

            if (created.Success)
            {
                return new Held(store, stream, created.Value);
            }

            // Not found: the client's create is two requests (a create that found the key, then a read of it to see whether
            // it was a delete marker), and the key's lease ran out between them (seen in CI). Free now: try again.
            if (created.Error is not NatsKVCreateException and not NatsKVKeyNotFoundException)
            {
                throw created.Error;
            }

            // Held by another process (or by this one for another binding of the stream): it holds it for a few requests.
            // The real clock, whatever the transport's: the other holder and the key's age limit run on real time.
            await Task.Delay(retry, cancellationToken).ConfigureAwait(false);
            retry = TimeSpan.FromTicks(Math.Min(retry.Ticks * 2, LongestRetry.Ticks));
        }
    }

    private async ValueTask<INatsKVStore> StoreAsync(CancellationToken cancellationToken)
    {
        if (_store is { } store)
        {
            return store;
        }

        await _opening.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            // Every process asks for the same bucket, so creating it is idempotent; a failure is tried again on next use.
            // On disk, as the streams it guards, so it outlives a server restart with the locks it holds.
            var config = new NatsKVConfig(bucket) { History = 1, MaxAge = Lease, Storage = NatsKVStorageType.File, Description = "Herald: locks of queue streams' sources while a topic is bound" };
            var context = new NatsKVContext(jetStream);
            try
            {
                return _store ??= await context.CreateOrUpdateStoreAsync(config, cancellationToken).ConfigureAwait(false);
            }
            catch (NatsJSApiException) when (!cancellationToken.IsCancellationRequested)
            {
                // Another process made the bucket between the client's look for it and its create, and the server refused
                // this create ("subjects overlap with an existing stream", seen in CI): it exists now, so this is an update.
                return _store ??= await context.CreateOrUpdateStoreAsync(config, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            _opening.Release();
        }
    }

    /// <summary>A held lock: disposing it deletes its key if it is still this holder's (not expired and taken by another).</summary>
    internal readonly struct Held(INatsKVStore store, string key, ulong revision) : IAsyncDisposable
    {
        public async ValueTask DisposeAsync() =>
            _ = await store.TryDeleteAsync(key, new NatsKVDeleteOpts { Revision = revision }).ConfigureAwait(false);
    }
}
