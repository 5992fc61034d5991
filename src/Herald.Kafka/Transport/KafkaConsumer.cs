using System.Collections.Concurrent;
using System.Globalization;
using System.Threading.Channels;
using Confluent.Kafka;
using Herald.Kafka.Diagnostics;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Transport;

/// <summary>
/// Consumes one queue: a member of the queue's consumer group, subscribed to the queue's topic and the topics bound to
/// it. One thread polls the client (which is not thread-safe): it hands records to one lane per worker (the same key
/// always to the same lane, so a key is handled in order; others to the least loaded lane), serves rebalances and
/// commits. What the client has fetched already is taken in one go and handed to each lane as one batch, so a worker
/// wakes once per batch rather than once per record. Each partition's offsets commit only over a contiguous run of settled messages (<see cref="PartitionProgress"/>),
/// after the handler's unit of work committed and any retry or dead-letter copy was confirmed. A revoked partition's
/// running handlers may finish (then their offsets commit) until <see cref="KafkaTransportOptions.RevocationTimeout"/>;
/// after that they are abandoned, and the partition's next owner handles their messages again.
/// </summary>
internal sealed partial class KafkaConsumer : ITransportConsumer, Herald.Internal.IConsumerCompletion
{
    private static readonly TimeSpan PollTimeout = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan LagInterval = TimeSpan.FromSeconds(1);

    // A failed nack or dead-letter copy is made again after a back-off doubling between these (by hand: an adapter adds only
    // its client library, and Polly.Core is not among the central packages); a redelivery refused this many times running
    // is dead-lettered instead.
    private static readonly TimeSpan OwedMinBackoff = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan OwedMaxBackoff = TimeSpan.FromSeconds(10);
    private const int RefusalsBeforeDeadLetter = 3;

    // A poll loop that failed starts again with a new client after a back-off doubling between these, reset once the new
    // client is given partitions.
    private static readonly TimeSpan ResumeMinBackoff = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan ResumeMaxBackoff = TimeSpan.FromSeconds(30);

    // The most records taken in one go before they are handed over and the commit timer is looked at again.
    private const int MaxBatch = 256;

    private readonly KafkaTransport _transport;
    private readonly KafkaTransportOptions _options;
    private readonly DeliveryHandler _handler;
    private readonly ILogger _logger;
    private readonly ConsumerBuilder<byte[]?, byte[]> _builder;
    private IConsumer<byte[]?, byte[]> _consumer;
    private readonly ConcurrentDictionary<TopicPartition, PartitionProgress> _partitions = new();
    private readonly List<PartitionProgress> _retired = [];
    private readonly HashSet<TopicPartition> _seen = [];
    private readonly Channel<List<KafkaDelivery>>[] _lanes;

    // Per lane, the records taken but not handed over yet (poll thread only); and emptied batches for reuse.
    private readonly List<KafkaDelivery>?[] _pending;
    private readonly ConcurrentQueue<List<KafkaDelivery>> _spare = new();

    // The partition of the last record taken (poll thread only; forgotten on every rebalance): records come in runs of one
    // partition, and the lookup by TopicPartition costs an allocation and a hash of the topic name per record.
    private PartitionProgress? _lastProgress;

    // The attribute values records repeat, decoded once (poll thread only).
    private readonly RepeatedTexts _texts = new();
    private readonly int[] _laneLoad;

    // Where a partition the group has no offset for starts, told to the client at assignment (null: left to the client).
    private readonly Offset? _resetTo;
    private readonly int _prefetch;

    // Once every prefetch slot is taken, the poll thread waits until the handlers brought the count down to this, so it
    // takes the next records in a batch (not one record per finished handler, each a wake-up of the poll thread).
    private readonly int _resumeAt;
    private readonly ManualResetEventSlim _released = new(false);

    // Set while the poll thread waits on _released: only then does a finishing handler signal it.
    private int _waiting;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly TaskCompletionSource _assigned = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile string[]? _resubscribe;
    private string[] _topics;
    private Task _running = Task.CompletedTask;
    private Task _poll = Task.CompletedTask;

    // Why the poll loop ended on its own, for Completion.
    private Exception? _pollFault;

    // Set when the stop gave up on handlers that ignore their cancellation: the poll loop no longer waits for them.
    private volatile bool _abandoned;

    // Poll thread only: set at the final commit of a stop, so a failure there (or of the revocation commit Close makes
    // after it) is not logged as one a later commit carries; the second marks that it was logged.
    private bool _finalCommit;
    private bool _finalCommitFailureLogged;
    private int _inFlight;
    private bool _paused;
    private List<TopicPartition>? _assignedInPoll;
    private int _stopped;
    private int _failures;
    private int _disposed;

    private KafkaConsumer(KafkaTransport transport, string queue, string[] topics, ConsumerOptions options, DeliveryHandler handler, ILogger logger)
    {
        _transport = transport;
        _options = transport.Options;
        Queue = queue;
        GroupId = _options.GroupIdPrefix + queue;
        _topics = topics;
        _handler = handler;
        _logger = logger;
        _prefetch = Math.Max(options.Prefetch, options.MaxConcurrency);
        _resumeAt = _prefetch - Math.Max(1, _prefetch / 4);
        _lanes = new Channel<List<KafkaDelivery>>[options.MaxConcurrency];
        _pending = new List<KafkaDelivery>?[options.MaxConcurrency];
        _laneLoad = new int[options.MaxConcurrency];
        for (var i = 0; i < _lanes.Length; i++)
        {
            // Unbounded on purpose: the poll thread must never block on a lane (it serves rebalances); what bounds the
            // lanes is the prefetch count of dispatched, unfinished records, past which the poll thread stops taking more.
            _lanes[i] = Channel.CreateUnbounded<List<KafkaDelivery>>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        }

        _builder = transport.BuildConsumer(GroupId, out var settings)
            .SetPartitionsAssignedHandler(OnAssigned)
            .SetPartitionsRevokedHandler((_, revoked) => OnRevoked(revoked, lost: false))
            .SetPartitionsLostHandler((_, lost) => OnRevoked(lost, lost: true))
            .SetErrorHandler((_, error) => Log.ClientError(_logger, GroupId, error.Code, error.Reason));
        _consumer = _builder.Build();
        _resetTo = settings.AutoOffsetReset switch
        {
            AutoOffsetReset.Earliest => Offset.Beginning,
            AutoOffsetReset.Latest => Offset.End,
            _ => null,
        };
    }

    public string Queue { get; }

    public string GroupId { get; }

    public Task Completion { get; private set; } = Task.CompletedTask;

    /// <summary>Raised on the poll thread when partitions are being revoked, before their handlers are waited for (tests watch it).</summary>
    internal event Action<IReadOnlyList<TopicPartition>>? Revoking;

    /// <summary>The partitions this consumer holds now.</summary>
    internal IReadOnlyCollection<TopicPartition> Assignment => _partitions.Keys.ToList();

    /// <summary>Whether the poll loop has paused its partitions because every slot is busy.</summary>
    internal bool Paused => Volatile.Read(ref _paused);

    public static async Task<KafkaConsumer> StartAsync(
        KafkaTransport transport, string queue, string[] topics, ConsumerOptions options, DeliveryHandler handler, ILogger logger, CancellationToken cancellationToken)
    {
        var consumer = new KafkaConsumer(transport, queue, topics, options, handler, logger);
        var workers = Enumerable.Range(0, consumer._lanes.Length).Select(lane => Task.Run(() => consumer.WorkAsync(lane), CancellationToken.None));
        consumer._poll = Task.Factory.StartNew(consumer.Poll, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        consumer._running = Task.WhenAll([consumer._poll, .. workers]);
        consumer.Completion = Herald.Internal.ConsumerCompletion.WhenEndedAsync(consumer._poll, consumer._stopping.Token, () => Volatile.Read(ref consumer._pollFault));
        KafkaLag.Register(consumer);

        // Returns once the group gave this member its partitions, so work sent now is spread over every member started
        // so far; a member the group leaves without partitions (more members than partitions) returns after the timeout.
        try
        {
            await consumer._assigned.Task.WaitAsync(transport.Options.AssignmentTimeout, transport.TimeProvider, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            Log.NoAssignmentYet(logger, queue, transport.Options.AssignmentTimeout);
        }

        return consumer;
    }

    /// <summary>Subscribes to <paramref name="topics"/> from the next poll on (a topic was bound to the queue).</summary>
    public void Resubscribe(string[] topics) => _resubscribe = topics;

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
        }

        if (!_abandoned && !await Herald.Internal.ConsumerStop.WaitAsync(_running, _aborting, _transport.TimeProvider, cancellationToken).ConfigureAwait(false))
        {
            // Left running: _aborting abandoned every partition, so what they settle when they end is dropped (KafkaDelivery)
            // and their offsets are never committed. The poll loop stops waiting for them, commits the settled run before
            // them and leaves the group, whose next member reads their records again.
            _abandoned = true;
            if (Volatile.Read(ref _inFlight) is > 0 and var running)
            {
                Herald.Internal.AdapterLog.HandlersAbandoned(_logger, Queue, running);
            }

            // The client leaves the group and closes on the poll thread. A close that never returns (a librdkafka hang) must
            // not hold the application's stop: past CloseTimeout the client is left closing, and the group hands the
            // partitions on after its session timeout.
            await _poll.WaitAsync(_options.CloseTimeout, _transport.TimeProvider, CancellationToken.None).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            if (!_poll.IsCompleted)
            {
                Log.ClientLeftClosing(_logger, Queue, _options.CloseTimeout);
            }
        }

        KafkaLag.Unregister(this);
        _transport.Forget(this);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);

        // A poll thread left closing its client still uses these: they go once it ends.
        if (_poll.IsCompleted)
        {
            DisposeResources();
        }
        else
        {
            _ = _poll.ContinueWith(static (_, state) => ((KafkaConsumer)state!).DisposeResources(), this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private void DisposeResources()
    {
        foreach (var progress in _retired.Concat(_partitions.Values))
        {
            progress.Dispose();
        }

        _stopping.Dispose();
        _aborting.Dispose();
        _released.Dispose();
    }

    internal async ValueTask RedeliverAsync(Message<byte[]?, byte[]> message, TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
    {
        // Saturated: a foreign attempt header of int.MaxValue must not wrap (issue 10).
        var attempt = (int)Math.Min(int.MaxValue, KafkaEnvelopeCodec.Attempt(message) + 1L);
        var delayed = delay > TimeSpan.Zero;

        // At most the transport's MaxDelay (the retry policy's delays are well within it): a due time further away is one
        // the relay refuses as malformed.
        delay = delay < KafkaTransport.MaxDelay ? delay : KafkaTransport.MaxDelay;
        var due = delayed ? (_transport.TimeProvider.GetUtcNow() + delay).ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture) : null;
        var copy = KafkaEnvelopeCodec.CopyForRepublish(
            message,
            [
                new(KafkaEnvelopeCodec.AttemptHeader, attempt.ToString(CultureInfo.InvariantCulture)),
                new(KafkaEnvelopeCodec.DueHeader, due),
                new(KafkaEnvelopeCodec.TargetHeader, delayed ? Queue : null),
            ],
            headers);
        var topic = delayed ? _options.RetryTopicName(Queue) : Queue;
        await _transport.ProduceAsync(topic, copy, cancellationToken).ConfigureAwait(false);
    }

    internal ValueTask DeadLetterAsync(Message<byte[]?, byte[]> message, string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        _transport.DeadLetterAsync(message, Queue, reason, headers, cancellationToken);

    /// <summary>Lag of each held partition: the log end offset the client last saw minus the committed offset.</summary>
    internal IEnumerable<(TopicPartition Partition, long Lag)> Lag()
    {
        foreach (var (partition, progress) in _partitions)
        {
            if (progress.HighWatermark is { } high)
            {
                // Before this member's first commit: from where it started (what it skipped is not lag), else the log's start.
                var from = progress.Committed >= 0 ? progress.Committed : progress.StartOffset ?? progress.LowWatermark ?? high;
                yield return (partition, Math.Max(0, high - from));
            }
        }
    }

    /// <summary>
    /// Runs the poll loop until the consumer stops. A loop that fails (an exception other than a consume error, say in the
    /// assignment callback) would leave the consumer stopped with nobody told: its client leaves the group instead, what
    /// settled committed, and a new client of the same group starts polling after a back-off.
    /// </summary>
    private void Poll()
    {
        try
        {
            while (true)
            {
                try
                {
                    PollClient();
                    return;
                }
                catch (Exception e) when (!_stopping.IsCancellationRequested)
                {
                    var backoff = TimeSpan.FromTicks(Math.Min(ResumeMinBackoff.Ticks << Math.Min(_failures++, 8), ResumeMaxBackoff.Ticks));
                    Log.PollFailedResuming(_logger, e, Queue, backoff);
                    Leave();

                    // Built (not subscribed: it joins the group once polling) before the wait, so a stop meanwhile disposes it.
                    _consumer = _builder.Build();
                    try
                    {
                        Task.Delay(backoff, _transport.TimeProvider, _stopping.Token).GetAwaiter().GetResult();
                    }
                    catch (OperationCanceledException)
                    {
                        return;
                    }

                    Log.PollResumed(_logger, Queue, GroupId);
                }
            }
        }
#pragma warning disable CA1031 // Logged: the poll thread must end cleanly so StopAsync returns.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Volatile.Write(ref _pollFault, e);
            Log.PollFailed(_logger, e, Queue);
        }
        finally
        {
            foreach (var lane in _lanes)
            {
                lane.Writer.TryComplete();
            }

            _consumer.Dispose();
        }
    }

    /// <summary>
    /// The failed client leaves the group as a stopping one does: its partitions are given up (running handlers finish up to
    /// the revocation timeout, what settled is committed) and it is closed. Whatever fails here is logged: the new client
    /// joins the group anyway, and the group hands it the partitions once this member is gone or timed out.
    /// </summary>
    private void Leave()
    {
        try
        {
            var held = _partitions.Keys.Select(p => new TopicPartitionOffset(p, Offset.Unset)).ToList();
            if (held.Count > 0)
            {
                OnRevoked(held, lost: false);
            }

            // The unsubscribe's revocation of what was just given up finds nothing held (OnRevoked).
            KafkaTransport.LeaveGroup(_consumer, _logger, Queue);
        }
#pragma warning disable CA1031 // Logged: the failed client is dropped either way.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.FailedClientNotClosed(_logger, e, Queue);
        }
        finally
        {
            _consumer.Dispose();
            _paused = false;
            _assignedInPoll = null;
            _lastProgress = null;
        }
    }

    private void PollClient()
    {
        _consumer.Subscribe(_topics);
        var clock = _transport.TimeProvider;
        var nextCommit = clock.GetTimestamp();
        var nextLag = nextCommit;
        while (!_stopping.IsCancellationRequested)
        {
            if (_resubscribe is { } topics)
            {
                _resubscribe = null;
                _topics = topics;
                _consumer.Subscribe(topics);
            }

            MatchPause();

            // Commits and the gauge go on while every slot is busy: slow handlers must not hold back what others settled.
            if (HasRoom())
            {
                ConsumeAvailable(MaxBatch);
            }

            var now = clock.GetTimestamp();
            if (clock.GetElapsedTime(nextCommit, now) >= TimeSpan.Zero)
            {
                Commit(_partitions.Values.Select(p => p.ToCommit()));
                nextCommit = now + (long)(_options.CommitInterval.TotalSeconds * clock.TimestampFrequency);
            }

            if (clock.GetElapsedTime(nextLag, now) >= TimeSpan.Zero)
            {
                RefreshWatermarks();
                nextLag = now + (long)(LagInterval.TotalSeconds * clock.TimestampFrequency);
            }
        }

        // Stopping: nothing new starts; running handlers finish (or are cancelled by StopAsync's token), then what
        // they settled is committed before the group hands the partitions to another member. The client is polled
        // meanwhile, paused: unpolled past max.poll.interval.ms it left the group, and the partitions' next owner
        // handled the running handlers' messages again while they ran.
        while (Volatile.Read(ref _inFlight) > 0 && !_abandoned)
        {
            MatchPause();
            if (!WaitForRelease(0, PollTimeout))
            {
                PauseAndPollOnce();
            }
        }

        _finalCommit = true;
        var final = _partitions.Values.Select(p => (Progress: p, Offset: p.ToCommit())).ToList();
        foreach (var (progress, offset) in final.Where(f => f.Progress.Held > 0))
        {
            // Not started (the stop began), given up unsettled, or abandoned with their handlers: the next owner reads the
            // partition again from the first of them, and so handles again what settled after it here.
            Log.StopLeftRecords(_logger, Queue, progress.Partition.ToString(), progress.Held, ReadFrom(progress, offset));
        }

        Commit(final.Select(f => f.Offset));
        KafkaTransport.LeaveGroup(_consumer, _logger, Queue);
    }

    /// <summary>
    /// Gives the partitions assigned during the last poll the consumer's pause state. librdkafka keeps a partition's pause
    /// across its revocation: one given up while every slot was busy would come back paused, and its records would never be
    /// read again. A partition new to this client is not paused, which it must be while the others are.
    /// </summary>
    private void MatchPause()
    {
        if (KafkaTransport.TakeAssigned(_consumer, ref _assignedInPoll) is not { } assigned)
        {
            return;
        }

        if (_paused)
        {
            _consumer.Pause(assigned);
        }
        else
        {
            _consumer.Resume(assigned);
        }
    }

    /// <summary>
    /// True when fewer than the prefetch count are dispatched and unfinished. Else waits a moment for one to finish; if
    /// none does, pauses the partitions and polls once, so rebalances are served while slow handlers hold every slot.
    /// </summary>
    private bool HasRoom()
    {
        if (Volatile.Read(ref _inFlight) < _prefetch)
        {
            if (_paused)
            {
                _consumer.Resume(_consumer.Assignment);
                _paused = false;
            }

            return true;
        }

        if (WaitForRelease(_resumeAt, _paused ? PollTimeout : TimeSpan.FromSeconds(1)) || Volatile.Read(ref _inFlight) < _prefetch)
        {
            return false;
        }

        PauseAndPollOnce();
        return false;
    }

    /// <summary>Pauses the partitions and polls once: rebalances are served, and the client stays in the group, while handlers hold it up.</summary>
    private void PauseAndPollOnce()
    {
        if (!_paused)
        {
            _consumer.Pause(_consumer.Assignment);
            _paused = true;
        }

        ConsumeAvailable(1);
    }

    /// <summary>
    /// Waits up to <paramref name="timeout"/> until at most <paramref name="count"/> records are dispatched and unfinished;
    /// true when they are.
    /// </summary>
    private bool WaitForRelease(int count, TimeSpan timeout)
    {
        _released.Reset();

        // Announced before the count is read, and a handler reads it after its decrement: one of the two sees the other.
        Interlocked.Exchange(ref _waiting, 1);
        try
        {
            return Volatile.Read(ref _inFlight) <= count || (_released.Wait(timeout) && Volatile.Read(ref _inFlight) <= count);
        }
        finally
        {
            Volatile.Write(ref _waiting, 0);
        }
    }

    /// <summary>A handler finished: the count goes down, and the poll thread is woken when it waits for that.</summary>
    private void Release()
    {
        var left = Interlocked.Decrement(ref _inFlight);
        if (Volatile.Read(ref _waiting) != 0 && (left <= _resumeAt || left == 0))
        {
            _released.Set();
        }
    }

    /// <summary>
    /// Takes the next record (waiting up to the poll timeout), then, without waiting, whatever else the client has fetched
    /// already, up to <paramref name="limit"/> records or the prefetch count, and hands them to their lanes together.
    /// </summary>
    private void ConsumeAvailable(int limit)
    {
        try
        {
            var timeout = PollTimeout;
            for (var taken = 0; taken < limit; taken++)
            {
                if (KafkaTransport.Poll(_consumer, timeout, _logger, Queue) is not { } result)
                {
                    return;
                }

                Dispatch(result);
                if (Volatile.Read(ref _inFlight) >= _prefetch)
                {
                    return;
                }

                timeout = TimeSpan.Zero;
            }
        }
        finally
        {
            HandOver();
        }
    }

    private void Dispatch(ConsumeResult<byte[]?, byte[]> result)
    {
        var progress = _lastProgress;
        if (progress is null || progress.Partition.Partition.Value != result.Partition.Value || !string.Equals(progress.Partition.Topic, result.Topic, StringComparison.Ordinal))
        {
            if (!_partitions.TryGetValue(result.TopicPartition, out progress))
            {
                // A record of a partition no longer held (revoked between fetch and now): its next owner reads it.
                return;
            }

            _lastProgress = progress;
        }

        var entry = progress.Take(result.Offset.Value);
        var envelope = KafkaEnvelopeCodec.Decode(result.Message, _options.Source, _transport.TimeProvider, out var failure, _texts);
        if (failure is not null)
        {
            Log.Undecodable(_logger, Queue, result.TopicPartitionOffset.ToString(), failure.Message);
        }

        Interlocked.Increment(ref _inFlight);
        var lane = PickLane(result.Message.Key);
        if (_lanes.Length > 1)
        {
            // With one lane there is no load to balance, and a counter both threads write costs a cache line's trip per record.
            Interlocked.Increment(ref _laneLoad[lane]);
        }

        (_pending[lane] ??= _spare.TryDequeue(out var spare) ? spare : []).Add(new KafkaDelivery(Queue, this, result.Message, entry, envelope, failure));
    }

    /// <summary>Hands each lane the records taken for it since the last hand-over.</summary>
    private void HandOver()
    {
        for (var lane = 0; lane < _pending.Length; lane++)
        {
            if (_pending[lane] is { } batch)
            {
                _pending[lane] = null;
                _lanes[lane].Writer.TryWrite(batch);
            }
        }
    }

    private int PickLane(byte[]? key)
    {
        if (_lanes.Length == 1)
        {
            return 0;
        }

        if (key is not null)
        {
            // The same key always to the same lane: one key is handled one message at a time, in partition order.
            var hash = new HashCode();
            hash.AddBytes(key);
            return (int)((uint)hash.ToHashCode() % (uint)_lanes.Length);
        }

        var best = 0;
        for (var i = 1; i < _lanes.Length; i++)
        {
            if (Volatile.Read(ref _laneLoad[i]) < Volatile.Read(ref _laneLoad[best]))
            {
                best = i;
            }
        }

        return best;
    }

    private async Task WorkAsync(int lane)
    {
        var reader = _lanes[lane].Reader;
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            while (reader.TryRead(out var batch))
            {
                foreach (var delivery in batch)
                {
                    var progress = delivery.Entry.Partition;
                    var settled = false;
                    try
                    {
                        if (!_stopping.IsCancellationRequested && progress.CanStart)
                        {
                            _ = await Herald.Internal.DeliverySettlement.RunAsync(_handler, delivery, _logger, _aborting.Token, progress.Abandoned).ConfigureAwait(false);
                            if (delivery.Owes)
                            {
                                await SettleOwedAsync(delivery, progress).ConfigureAwait(false);
                            }

                            settled = delivery.Completed;
                        }
                    }
                    finally
                    {
                        // Not settled (stopping, revoked, abandoned, a failed settlement): the offset stays uncommitted, so
                        // whoever reads the partition next handles the message again.
                        progress.Finish(delivery.Entry, settled);
                        if (_lanes.Length > 1)
                        {
                            Interlocked.Decrement(ref _laneLoad[lane]);
                        }

                        Release();
                    }
                }

                batch.Clear();
                _spare.Enqueue(batch);
            }
        }
    }

    /// <summary>
    /// A nack or dead letter whose copy failed: its offset cannot finish (the partition could never commit past it), so the
    /// copy is made again after a back-off until it is confirmed, or until the partition is abandoned or the consumer
    /// stops, when the offset stays uncommitted and whoever reads the partition next handles the message again. A
    /// redelivery the cluster refused <see cref="RefusalsBeforeDeadLetter"/> times running goes to the dead letters instead.
    /// </summary>
    private async Task SettleOwedAsync(KafkaDelivery delivery, PartitionProgress progress)
    {
        using var giveUp = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token, progress.Abandoned);
        var backoff = TimeSpan.Zero;
        var refusals = 0;
        while (delivery.Owes && !giveUp.IsCancellationRequested)
        {
            refusals = delivery.OwedFailure is MessageRejectedException ? refusals + 1 : 0;
            if (delivery.OwesRedelivery && refusals >= RefusalsBeforeDeadLetter)
            {
                Log.RedeliveryRefused(_logger, delivery.OwedFailure, Queue, delivery.Envelope.MessageId, progress.Partition.ToString());
                delivery.DeadLetterInstead($"Kafka refused its redelivery copy: {delivery.OwedFailure!.Message}");
                refusals = 0;
            }

            backoff = backoff < OwedMinBackoff ? OwedMinBackoff : TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, OwedMaxBackoff.Ticks));
            Log.SettlementCopyFailed(_logger, delivery.OwedFailure, Queue, delivery.Envelope.MessageId, progress.Partition.ToString(), backoff);
            try
            {
                await Task.Delay(backoff, _transport.TimeProvider, giveUp.Token).ConfigureAwait(false);
                await delivery.SettleOwedAsync(giveUp.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (giveUp.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // Kept as the delivery's OwedFailure; logged on the next round.
            catch (Exception)
#pragma warning restore CA1031
            {
            }
        }
    }

    private IEnumerable<TopicPartitionOffset> OnAssigned(IConsumer<byte[]?, byte[]> consumer, List<TopicPartition> assigned)
    {
        _lastProgress = null;
        foreach (var partition in assigned)
        {
            _partitions[partition] = new PartitionProgress(partition, _aborting.Token);
        }

        var uncommitted = _options.StartPosition == KafkaStartPosition.Committed && assigned.Count > 0 ? ReadCommitted(consumer, assigned) : null;

        // The start offsets are settled before ConsumeAsync returns, so a record sent after it is after them.
        var offsets = StartOffsets(consumer, assigned, uncommitted);
        foreach (var start in offsets)
        {
            if (!_partitions.TryGetValue(start.TopicPartition, out var progress))
            {
                continue;
            }

            if (start.Offset.Value >= 0)
            {
                progress.StartOffset = start.Offset.Value;
            }

            if (uncommitted is not null && uncommitted.Contains(start.TopicPartition) && FirstOffset(consumer, start) is { } first)
            {
                progress.CommitFrom(first);
            }
        }

        if (assigned.Count > 0)
        {
            // Assigned once this handler returns: their pause state is set after the poll (MatchPause).
            (_assignedInPoll ??= []).AddRange(assigned);
            Log.PartitionsAssigned(_logger, Queue, string.Join(", ", assigned));
            Herald.Internal.BrokerPartitions.Notify(_transport.PartitionObservers, Queue, [.. assigned.Select(p => _partitions[p].Broker)], assigned: true, _logger);
            _assigned.TrySetResult();
            _failures = 0;
        }

        return offsets;
    }

    /// <summary>
    /// Where the group stands on the new partitions, so the lag gauge is right before this member's first commit. Returns
    /// the partitions the group has no offset for (null when that could not be read).
    /// </summary>
    private HashSet<TopicPartition>? ReadCommitted(IConsumer<byte[]?, byte[]> consumer, List<TopicPartition> assigned)
    {
        try
        {
            var uncommitted = new HashSet<TopicPartition>();
            foreach (var committed in consumer.Committed(assigned, TimeSpan.FromSeconds(5)))
            {
                if (committed.Offset.Value < 0)
                {
                    uncommitted.Add(committed.TopicPartition);
                }
                else if (_partitions.TryGetValue(committed.TopicPartition, out var progress))
                {
                    progress.MarkCommitted(committed.Offset.Value);
                }
            }

            return uncommitted;
        }
        catch (KafkaException e)
        {
            // Only the gauge needs it; the client itself resumes from the committed offsets.
            Log.ReadCommittedFailed(_logger, Queue, e.Error.Code, e.Error.Reason);
            return null;
        }
    }

    private List<TopicPartitionOffset> StartOffsets(IConsumer<byte[]?, byte[]> consumer, List<TopicPartition> assigned, HashSet<TopicPartition>? uncommitted)
    {
        // Seen only once resolved: a lookup that failed (and took the client down) is made again at the next assignment.
        var fresh = assigned.Where(p => !_seen.Contains(p)).ToList();
        var position = _options.StartPosition;
        if (position == KafkaStartPosition.Committed)
        {
            // A partition the group has no offset for starts where the reset policy says, told to the client now: left to
            // it, the client finds no offset and looks the policy's offset up only after a back-off (100 ms in librdkafka).
            // A reset to the end is resolved here, as Latest is below, so a record sent once ConsumeAsync returned is read.
            return [.. assigned.Select(p => new TopicPartitionOffset(p, uncommitted is not null && uncommitted.Contains(p) && _resetTo is { } reset
                ? reset == Offset.End ? EndOf(consumer, p) : reset
                : Offset.Unset))];
        }

        if (fresh.Count == 0)
        {
            return [.. assigned.Select(p => new TopicPartitionOffset(p, Offset.Unset))];
        }

        var offsets = assigned.ToDictionary(p => p, p => new TopicPartitionOffset(p, Offset.Unset));
        if (position == KafkaStartPosition.Timestamp)
        {
            var at = new Timestamp(_options.StartTimestamp!.Value);
            foreach (var found in consumer.OffsetsForTimes(fresh.Select(p => new TopicPartitionTimestamp(p, at)), TimeSpan.FromSeconds(10)))
            {
                // No record at or after the time: start at the end.
                offsets[found.TopicPartition] = found.Offset == Offset.Unset ? new TopicPartitionOffset(found.TopicPartition, Offset.End) : found;
            }
        }
        else if (position == KafkaStartPosition.Earliest)
        {
            foreach (var partition in fresh)
            {
                offsets[partition] = new TopicPartitionOffset(partition, Offset.Beginning);
            }
        }
        else
        {
            foreach (var partition in fresh)
            {
                offsets[partition] = new TopicPartitionOffset(partition, EndOf(consumer, partition));
            }
        }

        _seen.UnionWith(fresh);
        return [.. offsets.Values];
    }

    /// <summary>The offset <paramref name="start"/> stands for (the log's start for the beginning), or null when unknown.</summary>
    private long? FirstOffset(IConsumer<byte[]?, byte[]> consumer, TopicPartitionOffset start)
    {
        if (start.Offset.Value >= 0)
        {
            return start.Offset.Value;
        }

        if (start.Offset != Offset.Beginning)
        {
            return null;
        }

        try
        {
            // Records below it are gone: committing it skips nothing the client will read.
            return consumer.QueryWatermarkOffsets(start.TopicPartition, TimeSpan.FromSeconds(10)).Low.Value;
        }
        catch (KafkaException e)
        {
            Log.ClientError(_logger, GroupId, e.Error.Code, e.Error.Reason);
            return null;
        }
    }

    // Latest means the end as of the start: resolved here rather than left to the client's first fetch (Offset.End), which
    // may come after records the caller sent once ConsumeAsync returned, and would skip them.
    private Offset EndOf(IConsumer<byte[]?, byte[]> consumer, TopicPartition partition)
    {
        try
        {
            return consumer.QueryWatermarkOffsets(partition, TimeSpan.FromSeconds(10)).High;
        }
        catch (KafkaException e)
        {
            Log.ClientError(_logger, GroupId, e.Error.Code, e.Error.Reason);
            return Offset.End;
        }
    }

    private void OnRevoked(List<TopicPartitionOffset> revoked, bool lost)
    {
        // Called from within a poll, possibly in the middle of a batch: what was taken must reach the lanes before the
        // revoked partitions' handlers are waited for.
        HandOver();
        _lastProgress = null;
        var partitions = revoked.Select(p => p.TopicPartition).ToList();
        if (!partitions.Any(_partitions.ContainsKey))
        {
            // Given up already (a failed client's Leave revokes before it leaves the group): nothing to wait for or commit.
            return;
        }

        Revoking?.Invoke(partitions);
        Log.PartitionsRevoked(_logger, Queue, string.Join(", ", partitions), lost);
        var deadline = _transport.TimeProvider.GetTimestamp();
        var offsets = new List<TopicPartitionOffset?>();
        var given = new List<Herald.Internal.BrokerPartition>();
        foreach (var partition in partitions)
        {
            if (_partitions.TryRemove(partition, out var progress))
            {
                var left = _options.RevocationTimeout - _transport.TimeProvider.GetElapsedTime(deadline);
                var offset = progress.Revoke(left > TimeSpan.Zero ? left : TimeSpan.Zero, commit: !lost);
                offsets.Add(offset);
                if (progress.UnfinishedAtTimeout > 0)
                {
                    // Its next owner reads it from the first record not settled here: some after it (other keys, other
                    // lanes) may have been handled here already, and are handled again there.
                    Log.RevocationTimedOut(_logger, Queue, partition.ToString(), _options.RevocationTimeout, progress.UnfinishedAtTimeout, ReadFrom(progress, offset));
                }

                _retired.Add(progress);
                given.Add(progress.Broker);
            }
        }

        // After the partitions' handlers finished (or were abandoned): nothing of them runs here any more.
        Herald.Internal.BrokerPartitions.Notify(_transport.PartitionObservers, Queue, given, assigned: false, _logger);

        // A lost partition belongs to another member already: committing for it could move its offsets past work not done.
        if (!lost)
        {
            Commit(offsets, revoking: true);
        }
    }

    /// <summary>Where a partition given up is read from next, for the log: the offset committed for it now or before.</summary>
    private static string ReadFrom(PartitionProgress progress, TopicPartitionOffset? committing)
    {
        var offset = committing?.Offset.Value ?? progress.Committed;
        return offset >= 0 ? "offset " + offset.ToString(CultureInfo.InvariantCulture) : "the group's committed offset (none committed by this member)";
    }

    /// <param name="candidates">The offsets to commit (null: nothing for that partition).</param>
    /// <param name="revoking">Whether they are of partitions this member gives up, for which no later commit comes.</param>
    private void Commit(IEnumerable<TopicPartitionOffset?> candidates, bool revoking = false)
    {
        var offsets = candidates.OfType<TopicPartitionOffset>().ToList();
        if (offsets.Count == 0)
        {
            return;
        }

        try
        {
            _consumer.Commit(offsets);
            foreach (var offset in offsets)
            {
                (_partitions.GetValueOrDefault(offset.TopicPartition) ?? _retired.LastOrDefault(p => p.Partition == offset.TopicPartition))?.MarkCommitted(offset.Offset.Value);
            }
        }
        catch (KafkaException e) when (_finalCommit)
        {
            // No commit comes after it: the partitions' next owner handles these records again.
            if (!_finalCommitFailureLogged)
            {
                _finalCommitFailureLogged = true;
                Log.FinalCommitFailed(_logger, Queue, e.Error.Code, e.Error.Reason);
            }
        }
        catch (KafkaException e) when (revoking)
        {
            // The partitions go to another member: no commit of this one carries these offsets any more.
            Log.RevocationCommitFailed(_logger, Queue, string.Join(", ", offsets.Select(o => o.TopicPartition)), e.Error.Code, e.Error.Reason);
        }
        catch (KafkaException e)
        {
            // Not committed now: the next commit carries the same (or a later) offset; a restart handles these again.
            Log.CommitFailed(_logger, Queue, e.Error.Code, e.Error.Reason);
        }
    }

    private void RefreshWatermarks()
    {
        foreach (var (partition, progress) in _partitions)
        {
            var marks = _consumer.GetWatermarkOffsets(partition);
            progress.HighWatermark = marks.High == Offset.Unset ? null : marks.High.Value;
            progress.LowWatermark = marks.Low == Offset.Unset ? null : marks.Low.Value;
        }
    }
}
