using Herald.Processes;
using Herald.Conformance;
using Xunit;

namespace Herald.Conformance.Transport.Processes;

/// <summary>
/// Issue 5, "two consumer processes on one queue never both complete the same message", checked on what two
/// <see cref="ConsumerChildProcess"/>es wrote; shared by the SQLite, PostgreSQL and RabbitMQ tests.
/// </summary>
public static class CompetingProcessesAssert
{
    /// <summary>Waits until the processes together have completed every sent message.</summary>
    public static Task WaitUntilAllCompletedAsync(IReadOnlyCollection<Guid> sent, TimeSpan deadline, params ConsumerChildProcess[] processes)
    {
        var union = new HashSet<Guid>();
        return WaitUntilAsync(
            () =>
            {
                foreach (var process in processes)
                {
                    process.AddCompletedTo(union);
                }

                return union.Count >= sent.Count && union.IsSupersetOf(sent);
            },
            $"{sent.Count} messages are completed by the processes together",
            deadline,
            processes);
    }

    /// <summary>Polls the condition until it holds; past the deadline, fails with what the processes have done by then.</summary>
    public static async Task WaitUntilAsync(Func<bool> condition, string description, TimeSpan deadline, params ConsumerChildProcess[] processes)
    {
        try
        {
            await Eventually.UntilAsync(condition, description, deadline);
        }
        catch (TimeoutException e)
        {
            throw new TimeoutException(e.Message + " " + string.Concat(processes.Select(p => p.Describe())), e);
        }
    }

    /// <summary>Every message was completed, once, by one of the two processes, and both did some of the work.</summary>
    public static void EachCompletedOnceByOneProcess(IReadOnlyCollection<Guid> sent, ConsumerChildProcess a, ConsumerChildProcess b)
    {
        var state = a.Describe() + b.Describe();
        CompletedExactlyTheSent(sent, state, a, b);
        NoRepeatsWithin(a, state);
        NoRepeatsWithin(b, state);
        var both = a.Completed.Intersect(b.Completed).ToList();
        Assert.True(both.Count == 0, $"{both.Count} messages were completed by both processes, such as {Some(both)}. {state}");
        Assert.True(a.Completed.Count > 0 && b.Completed.Count > 0, $"Both processes must have competed for the messages. {state}");
    }

    /// <summary>
    /// After <paramref name="killed"/> was killed holding messages: every message was completed, the messages it held came
    /// back and the survivor completed them, and the only messages completed by both are ones the killed process completed
    /// but whose ack may not have reached the queue.
    /// </summary>
    /// <param name="acksConfirmed">
    /// True when a returned ack means the queue has forgotten the message (the SQL queues delete the row before the ack
    /// returns); false when an ack is sent without a reply (AMQP 0-9-1 basic.ack), so any completion of the killed process
    /// may come back.
    /// </param>
    public static void OnlyTheKilledProcessesUnackedWorkRepeats(IReadOnlyCollection<Guid> sent, ConsumerChildProcess survivor, ConsumerChildProcess killed, bool acksConfirmed)
    {
        var state = survivor.Describe() + killed.Describe();
        CompletedExactlyTheSent(sent, state, survivor, killed);

        // A process never completes a message twice itself: the survivor kept its leases (or its channel), and the killed
        // process died before anything could come back to it.
        NoRepeatsWithin(survivor, state);
        NoRepeatsWithin(killed, state);

        // It was killed while it held messages (in its handlers, and prefetched ones never started, which "every message
        // completed" above covers): nothing released them, so they came back only when its leases ran out (or its
        // connection dropped), and the survivor completed them.
        var held = killed.Holding;
        Assert.True(held.Count > 0, $"The killed process held no message when it was killed. {state}");
        var survivorCompleted = survivor.Completed.ToHashSet();
        var notBack = held.Where(id => !survivorCompleted.Contains(id)).ToList();
        Assert.True(notBack.Count == 0, $"{notBack.Count} messages the killed process held never reached the survivor, such as {Some(notBack)}. {state}");

        // At-least-once: a message whose work was done but whose ack never reached the queue is delivered again, so it may be
        // completed twice, once by each process. Nothing else may be: a message the killed process acked (where acks are
        // confirmed) is gone, and one it never completed has one completion, the survivor's.
        var acked = acksConfirmed ? killed.Acked : new HashSet<Guid>();
        var mayRepeat = killed.Completed.Where(id => !acked.Contains(id)).ToHashSet();
        var both = survivorCompleted.Intersect(killed.Completed).ToList();
        var wrong = both.Where(id => !mayRepeat.Contains(id)).ToList();
        Assert.True(
            wrong.Count == 0,
            $"{wrong.Count} messages were completed by both processes although the killed one had acked them, such as {Some(wrong)}. {state}");
    }

    private static void CompletedExactlyTheSent(IReadOnlyCollection<Guid> sent, string state, params ConsumerChildProcess[] processes)
    {
        var completed = processes.SelectMany(p => p.Completed).ToHashSet();
        var missing = sent.Where(id => !completed.Contains(id)).ToList();
        Assert.True(missing.Count == 0, $"{missing.Count} of {sent.Count} messages were never completed, such as {Some(missing)}. {state}");
        var strangers = completed.Except(sent).ToList();
        Assert.True(strangers.Count == 0, $"{strangers.Count} completed ids were never sent, such as {Some(strangers)}. {state}");
    }

    private static void NoRepeatsWithin(ConsumerChildProcess process, string state)
    {
        var repeated = process.Completed.GroupBy(id => id).Where(g => g.Count() > 1).Select(g => g.Key).ToList();
        Assert.True(repeated.Count == 0, $"Process {process.Name} completed {repeated.Count} messages more than once, such as {Some(repeated)}. {state}");
    }

    private static string Some(IEnumerable<Guid> ids) => string.Join(", ", ids.Take(5));
}
