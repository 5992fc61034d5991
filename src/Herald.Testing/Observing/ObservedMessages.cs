namespace Herald.Testing.Observing;

/// <summary>
/// What the harness observed of one kind (sent, published, handled or dead-lettered), in the order it happened, with
/// expectations that wait for a match up to a deadline instead of sleeping.
/// </summary>
/// <typeparam name="TObservation">What one observation records.</typeparam>
public class ObservedMessages<TObservation>
    where TObservation : Observation
{
    private readonly Lock _gate = new();
    private readonly List<TObservation> _observed = [];
    private readonly List<Waiter> _waiters = [];
    private readonly string _kind;
    private readonly IHarnessClock _clock;
    private readonly (Func<TObservation, bool> Match, string Name)? _expected;

    /// <param name="kind">What is observed, for the messages.</param>
    /// <param name="clock">The harness.</param>
    /// <param name="expected">What <see cref="ExpectAsync{TMessage}"/> and <see cref="AnyAsync{TMessage}"/> wait for besides the message (all when null).</param>
    private protected ObservedMessages(string kind, IHarnessClock clock, (Func<TObservation, bool> Match, string Name)? expected = null)
    {
        _kind = kind;
        _clock = clock;
        _expected = expected;
    }

    /// <summary>Everything observed so far, oldest first.</summary>
    public IReadOnlyList<TObservation> All
    {
        get
        {
            lock (_gate)
            {
                return [.. _observed];
            }
        }
    }

    /// <summary>The observations so far whose message is a <typeparamref name="TMessage"/> matching <paramref name="where"/>, oldest first.</summary>
    public IReadOnlyList<TObservation> Select<TMessage>(Func<TMessage, bool>? where = null) => [.. All.Where(Matcher(where))];

    /// <summary>
    /// Waits until a <typeparamref name="TMessage"/> matching <paramref name="where"/> is observed (or returns the first one
    /// observed already) and returns it. On <see cref="HandledMessages"/> only a delivery that <see cref="HandlingOutcome.Succeeded"/>
    /// counts (not one retrying or dead-lettered): name the outcome to wait for another.
    /// </summary>
    /// <exception cref="HarnessAssertionException">None was observed within <paramref name="timeout"/> (the harness's default when null).</exception>
    public Task<TObservation> ExpectAsync<TMessage>(Func<TMessage, bool>? where = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        ExpectAsync(Expected(where), _expected is { } expected ? $"{typeof(TMessage).Name} ({expected.Name})" : typeof(TMessage).Name, timeout, cancellationToken);

    /// <summary>Waits like <see cref="ExpectAsync{TMessage}"/>, but answers false instead of throwing when none came in time.</summary>
    public async Task<bool> AnyAsync<TMessage>(Func<TMessage, bool>? where = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        await WaitAsync(Expected(where), timeout, cancellationToken).ConfigureAwait(false) is not null;

    /// <summary>
    /// Waits until the harness is idle (every delivery it expects settled, the outbox empty), then checks that no
    /// <typeparamref name="TMessage"/> matching <paramref name="where"/> was observed.
    /// </summary>
    /// <exception cref="HarnessAssertionException">One was observed, or the harness did not become idle within <paramref name="timeout"/>.</exception>
    public async Task ExpectNoneAsync<TMessage>(Func<TMessage, bool>? where = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        await _clock.WaitForIdleAsync(timeout, cancellationToken).ConfigureAwait(false);
        var found = Select(where);
        if (found.Count > 0)
        {
            throw new HarnessAssertionException(
                $"Expected no {_kind} {typeof(TMessage).Name}{(where is null ? string.Empty : " matching the condition")}, but observed {found.Count}: {string.Join("; ", found.Select(o => o.ToString()))}.");
        }
    }

    /// <summary>Waits for an observation matching <paramref name="match"/>; throws, naming <paramref name="expected"/> and listing what was observed, at the deadline.</summary>
    private protected async Task<TObservation> ExpectAsync(Func<TObservation, bool> match, string expected, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        var limit = timeout ?? _clock.DefaultTimeout;
        if (await WaitAsync(match, limit, cancellationToken).ConfigureAwait(false) is { } found)
        {
            return found;
        }

        var observed = All;
        var list = observed.Count == 0 ? "nothing" : string.Join("; ", observed.TakeLast(20).Select(o => o.ToString()));
        throw new HarnessAssertionException(
            $"Expected {_kind} {expected} within {limit}, but none came. Observed {_kind} ({observed.Count}{(observed.Count > 20 ? ", last 20" : string.Empty)}): {list}.");
    }

    private protected static Func<TObservation, bool> Matcher<TMessage>(Func<TMessage, bool>? where) =>
        o => o.Message is TMessage message && (where?.Invoke(message) ?? true);

    // The matcher of the waits that name no more than the message: the kind's own expectation first, so a condition on the
    // message never sees an observation that does not count.
    private Func<TObservation, bool> Expected<TMessage>(Func<TMessage, bool>? where)
    {
        var matches = Matcher(where);
        return _expected is { } expected ? o => expected.Match(o) && matches(o) : matches;
    }

    internal void Add(TObservation observation)
    {
        List<Waiter>? matched = null;
        lock (_gate)
        {
            _observed.Add(observation);
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].TryMatch(observation))
                {
                    (matched ??= []).Add(_waiters[i]);
                    _waiters.RemoveAt(i);
                }
            }
        }

        // Completed outside the lock: a waiter's continuation must not run while the list is held.
        foreach (var waiter in matched ?? [])
        {
            waiter.Complete(observation);
        }
    }

    private async Task<TObservation?> WaitAsync(Func<TObservation, bool> match, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        var waiter = new Waiter(match);
        lock (_gate)
        {
            foreach (var observation in _observed)
            {
                if (waiter.TryMatch(observation))
                {
                    waiter.ThrowIfConditionFailed();
                    return observation;
                }
            }

            _waiters.Add(waiter);
        }

        try
        {
            // The deadline is real time: the fake clock only moves when the test moves it.
            return await waiter.Task.WaitAsync(timeout ?? _clock.DefaultTimeout, TimeProvider.System, cancellationToken).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            return null;
        }
        finally
        {
            lock (_gate)
            {
                _waiters.Remove(waiter);
            }
        }
    }

    private sealed class Waiter(Func<TObservation, bool> match)
    {
        private readonly TaskCompletionSource<TObservation> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private Exception? _failure;

        public Task<TObservation> Task => _done.Task;

        public bool TryMatch(TObservation observation)
        {
            try
            {
                return match(observation);
            }
#pragma warning disable CA1031 // A condition that throws fails the test's wait with that exception, not the code that observed the message.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                _failure = ex;
                return true;
            }
        }

        public void ThrowIfConditionFailed()
        {
            if (_failure is { } failure)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            }
        }

        public void Complete(TObservation observation)
        {
            if (_failure is { } failure)
            {
                _done.TrySetException(failure);
            }
            else
            {
                _done.TrySetResult(observation);
            }
        }
    }
}

/// <summary>Messages sent to queues or published to topics.</summary>
public sealed class SentMessages : ObservedMessages<SentMessage>
{
    internal SentMessages(string kind, IHarnessClock clock)
        : base(kind, clock)
    {
    }
}

/// <summary>Deliveries to the harness's endpoints and how each ended.</summary>
public sealed class HandledMessages : ObservedMessages<HandledMessage>
{
    // Handled, without an outcome, means handled: as MassTransit's harness tells a consumed message from a faulted one, a
    // delivery that is retrying or was dead-lettered does not count.
    internal HandledMessages(IHarnessClock clock)
        : base("handled", clock, (o => o.Outcome == HandlingOutcome.Succeeded, nameof(HandlingOutcome.Succeeded)))
    {
    }

    /// <summary>
    /// Waits until a delivery of a <typeparamref name="TMessage"/> matching <paramref name="where"/> ended with
    /// <paramref name="outcome"/> (or returns the first such one observed already).
    /// </summary>
    /// <exception cref="HarnessAssertionException">None ended so within <paramref name="timeout"/> (the harness's default when null).</exception>
    public Task<HandledMessage> ExpectAsync<TMessage>(HandlingOutcome outcome, Func<TMessage, bool>? where = null, TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var matches = Matcher(where);
        return ExpectAsync(o => o.Outcome == outcome && matches(o), $"{typeof(TMessage).Name} ({outcome})", timeout, cancellationToken);
    }

    /// <summary>Waits until the delivery of the message with <paramref name="messageId"/> ended with an outcome other than <see cref="HandlingOutcome.Retrying"/>.</summary>
    /// <exception cref="HarnessAssertionException">It did not within <paramref name="timeout"/> (the harness's default when null).</exception>
    public Task<HandledMessage> ExpectSettledAsync(Guid messageId, TimeSpan? timeout = null, CancellationToken cancellationToken = default) =>
        ExpectAsync(o => o.Envelope.MessageId == messageId && o.Outcome != HandlingOutcome.Retrying, $"message {messageId} (settled)", timeout, cancellationToken);

    /// <summary>
    /// Waits until a delivery of the message with <paramref name="messageId"/> to <paramref name="endpoint"/> ended in a
    /// way that needs nothing more without the clock moving: settled, or to be redelivered after a delay. Deliveries of it
    /// to other queues of the host do not count.
    /// </summary>
    internal Task<HandledMessage> ExpectDeliveredAsync(Guid messageId, string messageType, string endpoint, CancellationToken cancellationToken) =>
        ExpectAsync(
            o => o.Envelope.MessageId == messageId
                && string.Equals(o.Endpoint, endpoint, StringComparison.Ordinal)
                && (o.Outcome != HandlingOutcome.Retrying || o.RedeliveryDelay > TimeSpan.Zero),
            $"{messageType} {messageId} (handled at '{endpoint}')",
            timeout: null,
            cancellationToken);
}

/// <summary>Messages that reached the dead-letter store.</summary>
public sealed class DeadLetteredMessages : ObservedMessages<DeadLetteredMessage>
{
    internal DeadLetteredMessages(IHarnessClock clock)
        : base("dead-lettered", clock)
    {
    }
}

/// <summary>What the observations need of the harness: the default deadline and a wait until nothing more is under way.</summary>
internal interface IHarnessClock
{
    TimeSpan DefaultTimeout { get; }

    Task WaitForIdleAsync(TimeSpan? timeout, CancellationToken cancellationToken);
}
