using System.Diagnostics;
using Herald.Nats.Transport;

namespace Herald.Nats.Tests;

/// <summary>The lock binding takes on a queue stream's sources, on the real server.</summary>
public sealed class NatsBindingLockTests : NatsTestBase
{
    [Fact]
    public async Task WhileOneProcessHoldsTheLock_AnotherWaits_AndGetsItOnceItIsReleased()
    {
        var first = await CreateTransportAsync();
        var second = await CreateTransportAsync();
        var mine = new NatsBindingLock(first.JetStream, Names.BindingLockBucket);
        var theirs = new NatsBindingLock(second.JetStream, Names.BindingLockBucket);

        var held = await mine.AcquireAsync("stream-a", CancellationToken.None);
        var waiting = theirs.AcquireAsync("stream-a", CancellationToken.None).AsTask();

        // Another stream's lock is free meanwhile.
        await using (await theirs.AcquireAsync("stream-b", CancellationToken.None))
        {
        }

        // Still waiting once the other stream's lock was taken and given back: then released, it gets the lock.
        Assert.False(waiting.IsCompleted);
        await held.DisposeAsync();
        await using var taken = await waiting.WaitAsync(Timeout);
    }

    [Fact]
    public async Task ALockWhoseHolderDied_IsTakenByAnother_OnceItsLeaseIsOver()
    {
        var first = await CreateTransportAsync();
        var second = await CreateTransportAsync();
        var lease = TimeSpan.FromSeconds(1);
        var died = new NatsBindingLock(first.JetStream, Names.BindingLockBucket, lease);
        var other = new NatsBindingLock(second.JetStream, Names.BindingLockBucket, lease);

        // Timed from before the first acquire: the server stores the key after that, and ages it from when it stored it
        // (under load the first acquire's answer came 0.5 s after the key was stored, so timing from it fell short).
        var waited = Stopwatch.StartNew();
        _ = await died.AcquireAsync("stream", CancellationToken.None); // never released
        await using var taken = await other.AcquireAsync("stream", CancellationToken.None).AsTask().WaitAsync(Timeout);

        Assert.True(waited.Elapsed >= lease * 0.9, $"Taken {waited.Elapsed} after the dead holder asked for it, within its lease of {lease}.");
    }

    [Fact]
    public async Task AWaitThatIsCancelled_Ends_AndLeavesTheLockToItsHolder()
    {
        var transport = await CreateTransportAsync();
        var locks = new NatsBindingLock(transport.JetStream, Names.BindingLockBucket);
        await using var held = await locks.AcquireAsync("stream", CancellationToken.None);

        using var cancel = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await locks.AcquireAsync("stream", cancel.Token));
    }

    [Fact]
    public async Task ABucketThatWentAway_IsMadeAgain_AndTheLockTaken()
    {
        var transport = await CreateTransportAsync();
        var locks = new NatsBindingLock(transport.JetStream, Names.BindingLockBucket);
        await using (await locks.AcquireAsync("stream", CancellationToken.None))
        {
        }

        await transport.JetStream.DeleteStreamAsync("KV_" + Names.BindingLockBucket);

        await using var held = await locks.AcquireAsync("stream", CancellationToken.None).AsTask().WaitAsync(Timeout);
    }
}
