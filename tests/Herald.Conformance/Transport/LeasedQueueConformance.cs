using System.Collections.Concurrent;
using Herald.Conformance.Reliability;
using Herald.Internal;
using Herald.Transport;
using Xunit;

namespace Herald.Conformance.Transport;

/// <summary>
/// A queue whose messages are leased keeps a message with its running handler however long it runs, on a loaded process,
/// and a claim lost anyway cancels the handler and has its completion refused (issue 10). Derived by each engine's queue,
/// with two instances standing for two processes and SQL behind their backs standing for another consumer.
/// </summary>
public abstract partial class LeasedQueueConformance
{
    /// <summary>The lease of the tests: short, so a handler outlives it several times within a few seconds.</summary>
    protected static TimeSpan Lease { get; } = TimeSpan.FromSeconds(1);

    /// <summary>Opens an instance of the queue on the engine as another process would (its own connections), with <see cref="Lease"/>.</summary>
    protected abstract Task<ITransport> OpenInstanceAsync();

    /// <summary>Starts a writer that hammers the engine (the file or the server) from outside the instances until disposed.</summary>
    protected abstract IDisposable StartConcurrentWriter();

    /// <summary>Does behind the instances' backs what another consumer's claim does to every message of the queue: takes its lease.</summary>
    protected abstract Task StealLeasesAsync(string queue);

    /// <summary>How many messages the queue holds, settled or not.</summary>
    protected abstract Task<long> CountQueuedAsync(string queue);

    /// <summary>Makes the engine refuse, from now on, to delete the message (as a database that fails writes fails an ack).</summary>
    protected abstract Task RefuseDeletingAsync(Guid messageId);

    // Regression (issue 10): the 1 s lease's renewal stalled behind the thread pool and the single writer, and a second
    // instance took the message from the running handler.
    [Fact]
    public async Task AHandlerRunningForSeveralLeases_KeepsItsMessage_WhileThePoolIsLoadedAndAnotherWriterHammersTheEngine()
    {
        var queue = "long-handler-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await OpenInstanceAsync();
        await using var b = await OpenInstanceAsync();
        await using var slow = await LongHandler.StartAsync(a, queue);
        await using var other = await slow.CompeteAsync(b);

        // Every pool hop waits behind the load, as it did for the renewal's timer callback, writer and continuations.
        using (StartConcurrentWriter())
        using (new ThreadPoolStarvation(backlog: 64, hold: TimeSpan.FromMilliseconds(20)))
        {
            // Four lease lengths: a renewal that starves lets the other instance take the message.
            await slow.Seen.AssertNoMoreThanAsync(1, Lease * 4, "the message was taken from a running handler");
        }

        await slow.ReleaseAndAssertHandledOnlyByItAsync(() => CountQueuedAsync(queue));
    }

    [Fact]
    public async Task MessagesWaitingInThePrefetchBuffer_BehindAHandlerRunningForSeveralLeases_KeepTheirLeases_AndEachIsHandledOnce()
    {
        // The house rule on leases: a claimed message waiting for a worker is renewed like a running one, so another
        // instance polling the queue meanwhile takes none of them.
        var queue = "buffered-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await OpenInstanceAsync();
        await using var b = await OpenInstanceAsync();
        var sent = Enumerable.Range(0, 4).Select(_ => TestEnvelopes.Create(partitionKey: null)).ToList();
        foreach (var envelope in sent)
        {
            await a.SendAsync(queue, envelope);
        }

        var seen = new DeliveryCollector();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        // One claim takes all four: one runs, three wait in the buffer for the one worker.
        await using var slow = await a.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1, Prefetch = 3 }, async (d, ct) =>
        {
            seen.Add(d, "a");
            if (started.TrySetResult())
            {
                await release.Task.WaitAsync(ct);
            }
        });
        await started.Task.WaitAsync(Eventually.DefaultTimeout);
        await using var other = await b.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            seen.Add(d, "b");
            return ValueTask.CompletedTask;
        });

        await seen.AssertNoMoreThanAsync(1, Lease * 4, "a message was taken while it waited in its consumer's buffer");
        release.TrySetResult();
        await seen.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], Eventually.DefaultTimeout, "every message handled");
        await Eventually.UntilAsync(async () => await CountQueuedAsync(queue) == 0, "every message is acked");
        Assert.All(sent, e => Assert.Equal(1, seen.CountOf(e.MessageId)));
        Assert.All(seen.Items, d => Assert.Equal("a", d.Consumer));
    }

    [Fact]
    public async Task TheQueueGauge_ReportsReadyLeasedAndDelayedMessages_OfAConsumedQueue()
    {
        var queue = "gauge-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await OpenInstanceAsync();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var consumer = await a.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1, Prefetch = 1 }, async (_, ct) =>
        {
            started.TrySetResult();
            await release.Task.WaitAsync(ct);
        });
        for (var i = 0; i < 3; i++)
        {
            await a.SendAsync(queue, TestEnvelopes.Create(partitionKey: null));
        }

        await a.SendAsync(queue, TestEnvelopes.Create(partitionKey: null), new SendOptions { Delay = TimeSpan.FromMinutes(10) });
        await started.Task.WaitAsync(Eventually.DefaultTimeout);

        var seen = new ConcurrentDictionary<string, long>();
        using var listener = new System.Diagnostics.Metrics.MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == "Herald" && instrument.Name == "herald.queue.messages")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            string? endpoint = null, state = null;
            foreach (var tag in tags)
            {
                if (tag.Key == "herald.endpoint")
                {
                    endpoint = tag.Value as string;
                }
                else if (tag.Key == "herald.queue.state")
                {
                    state = tag.Value as string;
                }
            }

            if (endpoint == queue && state is not null)
            {
                seen[state] = value;
            }
        });
        listener.Start();

        // The first collections start the count in the background; later ones report it.
        await Eventually.UntilAsync(
            () =>
            {
                listener.RecordObservableInstruments();
                // The consumer may hold a prefetched message besides the running one: leased counts both.
                var (ready, leased) = (seen.GetValueOrDefault("ready", -1), seen.GetValueOrDefault("leased", -1));
                return leased >= 1 && ready >= 0 && ready + leased == 3 && seen.GetValueOrDefault("delayed") == 1;
            },
            "the gauge reports the 3 due messages as ready or leased (at least 1 leased) and 1 delayed");
        release.TrySetResult();
    }

    [Fact]
    public async Task ALeaseAnotherConsumerTook_CancelsTheRunningHandler_AndItsCompletionIsRefused()
    {
        var queue = "stolen-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await OpenInstanceAsync();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var returned = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var deliveries = new ConcurrentQueue<Delivery>();
        await using var consumer = await a.ConsumeAsync(queue, ConsumerOptions.Default, async (d, ct) =>
        {
            deliveries.Enqueue(d);
            using var registration = ct.Register(() => cancelled.TrySetResult());
            started.TrySetResult();

            // Finishes as if it had not noticed: its ack must still not apply.
            await release.Task;
            returned.TrySetResult();
        });
        await a.SendAsync(queue, TestEnvelopes.Create(partitionKey: null));
        await started.Task.WaitAsync(Eventually.DefaultTimeout);

        await StealLeasesAsync(queue);

        await cancelled.Task.WaitAsync(Eventually.DefaultTimeout);
        release.TrySetResult();
        await returned.Task.WaitAsync(Eventually.DefaultTimeout);
        var delivery = Assert.Single(deliveries);
        await Eventually.UntilAsync(() => delivery.IsSettled, "the consumer tried to ack");
        Assert.Equal(1, await CountQueuedAsync(queue));
    }

    // A graceful stop waits for the running handlers, but it stopped the lease renewals first: a handler still running a
    // lease after the stop began lost its message to another instance, which ran it concurrently.
    [Fact]
    public async Task AHandlerStillRunningWhileItsConsumerStops_KeepsItsMessage_UntilItFinishes()
    {
        var queue = "stopping-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await OpenInstanceAsync();
        await using var b = await OpenInstanceAsync();
        var seen = new DeliveryCollector();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var slow = await a.ConsumeAsync(queue, ConsumerOptions.Default, async (d, ct) =>
        {
            seen.Add(d, "a");
            started.TrySetResult();
            await release.Task;
        });
        await a.SendAsync(queue, TestEnvelopes.Create(partitionKey: null));
        await started.Task.WaitAsync(Eventually.DefaultTimeout);
        await using var other = await b.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            seen.Add(d, "b");
            return ValueTask.CompletedTask;
        });

        // A graceful stop, as a host's shutdown starts it: it waits for the running handler, which still relies on its lease.
        var stopping = slow.StopAsync();
        try
        {
            // Four lease lengths: without renewals the other instance takes the message after one.
            await seen.AssertNoMoreThanAsync(1, Lease * 4, "the message was taken from a handler its stopping consumer still ran");
        }
        finally
        {
            release.TrySetResult();
            await stopping.WaitAsync(Eventually.DefaultTimeout);
            await slow.DisposeAsync();
        }

        Assert.Equal(["a"], seen.Items.Select(d => d.Consumer));
    }

    // Regression (audit, round 8): a stop whose deadline had passed still waited for a handler that ignores its token for as
    // long as it ran (the host's stop, and the transport's dispose, with it). It now abandons it after a short grace: the
    // message goes back, and the handler's ack when it ends is not sent (on SQS it deleted the message handed back).
    [Fact]
    public async Task AHandlerThatIgnoresItsCancellation_IsAbandonedByTheStop_AndItsMessageIsDeliveredAgain()
    {
        var queue = "abandoned-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await OpenInstanceAsync();
        await using var b = await OpenInstanceAsync();
        var seen = new DeliveryCollector();
        var started = new TaskCompletionSource<Delivery>(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var stubborn = await a.ConsumeAsync(queue, ConsumerOptions.Default, async (d, _) =>
        {
            seen.Add(d, "a");
            started.TrySetResult(d);
            await release.Task;
        });
        try
        {
            await a.SendAsync(queue, TestEnvelopes.Create(partitionKey: null));
            var abandoned = await started.Task.WaitAsync(Eventually.DefaultTimeout);

            using var deadline = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));
            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            await stubborn.StopAsync(deadline.Token).WaitAsync(Eventually.DefaultTimeout);
            Assert.InRange(stopwatch.Elapsed, TimeSpan.Zero, TimeSpan.FromMilliseconds(200) + ConsumerStop.AbandonGrace + TimeSpan.FromSeconds(3));

            // The handler ends after the stop: its ack is due now, and must not remove the message handed back.
            release.TrySetResult();
            await Eventually.UntilAsync(() => abandoned.IsSettled, "the abandoned handler ended");
            await using var other = await b.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
            {
                seen.Add(d, "b");
                return ValueTask.CompletedTask;
            });
            await seen.WaitForCountAsync(2, Lease * 5, "the abandoned message delivered again");
            Assert.Equal(["a", "b"], seen.Items.Select(d => d.Consumer));
        }
        finally
        {
            release.TrySetResult();
            await stubborn.DisposeAsync().AsTask().WaitAsync(Eventually.DefaultTimeout);
        }
    }

    // A settlement that gave up leaves the message under its consumer's lease, and renewals extended every message the
    // consumer's lease covered: while it held any other, the failed one was renewed for ever instead of coming back.
    [Fact]
    public async Task AMessageWhoseAckGaveUp_ComesBackWhenItsLeaseRunsOut_WhileItsConsumerHoldsAnother()
    {
        var queue = "ack-gave-up-" + Guid.NewGuid().ToString("N")[..8];
        await using var a = await OpenInstanceAsync();
        var holding = TestEnvelopes.Create(partitionKey: null);
        var failing = TestEnvelopes.Create(partitionKey: null);
        await RefuseDeletingAsync(failing.MessageId);
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var attempts = new ConcurrentQueue<int>();
        await using var consumer = await a.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 2 }, async (d, ct) =>
        {
            if (d.Envelope.MessageId == holding.MessageId)
            {
                held.TrySetResult();
                await release.Task.WaitAsync(ct);
                return;
            }

            // Returns, so the consumer acks; the engine refuses, and the ack gives up after a third of the lease.
            attempts.Enqueue(d.Envelope.DeliveryAttempt);
        });
        await a.SendAsync(queue, holding);
        await held.Task.WaitAsync(Eventually.DefaultTimeout);
        await a.SendAsync(queue, failing);

        try
        {
            // Back within a lease and a third of its delivery; five leases leave room for a loaded machine.
            await Eventually.UntilAsync(() => attempts.Count >= 2, "the message whose ack gave up is delivered again", Lease * 5);
        }
        finally
        {
            release.TrySetResult();
        }

        Assert.Equal([1, 2], attempts.Take(2));
    }

    /// <summary>
    /// A handler on one instance ("a") that runs until released, for several leases; another instance ("b") competing for
    /// its queue should never get the message meanwhile.
    /// </summary>
    protected sealed class LongHandler : IAsyncDisposable
    {
        private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly string _queue;
        private ITransportConsumer? _consumer;
        private volatile bool _cancelled;

        private LongHandler(string queue) => _queue = queue;

        /// <summary>What "a" and "b" received.</summary>
        public DeliveryCollector Seen { get; } = new();

        /// <summary>Consumes <paramref name="queue"/> on <paramref name="instance"/>, sends it one message and returns once the handler runs it.</summary>
        public static async Task<LongHandler> StartAsync(ITransport instance, string queue)
        {
            var handler = new LongHandler(queue);
            handler._consumer = await instance.ConsumeAsync(queue, ConsumerOptions.Default, async (d, ct) =>
            {
                handler.Seen.Add(d, "a");
                handler._started.TrySetResult();
                await handler._release.Task.WaitAsync(ct);
                handler._cancelled = ct.IsCancellationRequested;
            });
            await instance.SendAsync(queue, TestEnvelopes.Create(partitionKey: null));
            await handler._started.Task.WaitAsync(Eventually.DefaultTimeout);
            return handler;
        }

        /// <summary>Consumes the queue on <paramref name="other"/> as "b", which handles whatever it gets at once.</summary>
        public Task<ITransportConsumer> CompeteAsync(ITransport other) =>
            other.ConsumeAsync(_queue, ConsumerOptions.Default, (d, _) =>
            {
                Seen.Add(d, "b");
                return ValueTask.CompletedTask;
            }).AsTask();

        /// <summary>Lets the handler finish (it returns, so its consumer acks).</summary>
        public void Release() => _release.TrySetResult();

        /// <summary>Lets the handler finish, waits for its ack, and asserts that only it ran the message, never cancelled.</summary>
        public async Task ReleaseAndAssertHandledOnlyByItAsync(Func<Task<long>> countQueued)
        {
            Release();
            await Eventually.UntilAsync(async () => await countQueued() == 0, "the handler's ack is applied");
            Assert.False(_cancelled, "the handler's token fired though its lease was renewed");
            Assert.Equal(["a"], Seen.Items.Select(d => d.Consumer));
        }

        public async ValueTask DisposeAsync()
        {
            _release.TrySetResult();
            if (_consumer is not null)
            {
                await _consumer.DisposeAsync();
            }
        }
    }
}
