using System.Text;
using System.Text.Json;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Streams.Topology;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams;

/// <summary>
/// The later sub-topologies of a processor with several partitions (a re-key after state that feeds state again): each
/// partition's commit writes the records leaving its sub-topology to the repartition logs of the next one, in the same
/// unit of work as its state and checkpoint, and each partition of the next stage takes them from there in source order.
/// </summary>
public sealed partial class StreamProcessor
{
    private async ValueTask WriteLogsAsync(IServiceProvider services, Dictionary<string, List<StateChange>>? logs, CancellationToken cancellationToken)
    {
        if (logs is null)
        {
            return;
        }

        var unitOfWork = services.GetRequiredService<IUnitOfWork>();
        foreach (var (log, changes) in logs)
        {
            if (changes.Count > 0)
            {
                await _state.WriteAsync(log, changes, unitOfWork, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    private static void WakeStage(StreamRun run, int stage)
    {
        foreach (var partition in run.Partitions.Values)
        {
            if (partition.Stages.Count >= stage)
            {
                partition.Stages[stage - 1].Wake();
            }
        }
    }

    /// <summary>Takes what the stage before committed whenever woken (or polled), until the run stops or fails.</summary>
    private async Task StageLoopAsync(StreamRun run, StreamStage stage)
    {
        try
        {
            var stopping = stage.Stopping.Token;

            // Owning every partition, this process makes every commit the stage waits for, and each wakes it.
            var poll = run.Partitions.Count == run.PartitionCount ? Timeout.InfiniteTimeSpan : RepartitionPoll;
            while (run.Failure is null)
            {
                var last = stopping.IsCancellationRequested;
                await StageRoundAsync(run, stage).ConfigureAwait(false);
                if (last)
                {
                    return;
                }

                try
                {
                    await stage.WaitAsync(poll, _time, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    // Stopping: one last round.
                }
            }
        }
        catch (Exception ex)
        {
            Fail(run, ex);
        }
    }

    /// <summary>
    /// One round of a later stage: every writer's mark says how far it committed; the records of every log up to the lowest
    /// mark are complete, so they run in source order, with the stream time each left at, then the stage's stream time
    /// moves to that mark's. State, outputs, the records taken (deleted from their logs), the records for the next stage
    /// and the checkpoint commit in one unit of work.
    /// </summary>
    private async ValueTask StageRoundAsync(StreamRun run, StreamStage stage)
    {
        // Owning every writer, this process knows their marks once each has committed in this run: no read is needed
        // until the lowest of them moves past what the stage took (each writer's commit wakes the stage).
        if (run.Partitions.Count == run.PartitionCount)
        {
            var writers = run.Partitions.Values.Select(p => stage.Stage == 1 ? p.Writer : p.Stages[stage.Stage - 2].Writer).ToList();
            if (writers.All(w => w.MarkedAt >= 0) && writers.Min(w => w.MarkedAt) <= stage.Committed)
            {
                return;
            }
        }

        var marks = new RepartitionMark[run.PartitionCount];
        for (var from = 0; from < marks.Length; from++)
        {
            await foreach (var entry in _state.ReadAllAsync(RepartitionWriter.LogName(Name, stage.Stage, from, stage.Index)).ConfigureAwait(false))
            {
                if (entry.Key == RepartitionWriter.MarkKey)
                {
                    marks[from] = JsonSerializer.Deserialize<RepartitionMark>(entry.Value, StateCodec.Json)!;
                }
            }

            if (marks[from] is null)
            {
                return; // That writer has not committed yet.
            }
        }

        var frontier = marks.MinBy(m => m.Position)!;
        if (frontier.Position <= stage.Committed)
        {
            return;
        }

        // Read after the marks: everything up to the lowest mark was committed with it, so it is all there now.
        var taken = new List<(int From, string Key, string Json, RepartitionRecord Record)>();
        for (var from = 0; from < marks.Length; from++)
        {
            await foreach (var entry in _state.ReadAllAsync(RepartitionWriter.LogName(Name, stage.Stage, from, stage.Index)).ConfigureAwait(false))
            {
                if (entry.Store == RepartitionWriter.Store && entry.Key != RepartitionWriter.MarkKey && RepartitionRecord.Decode(entry.Value) is { } record && record.Position <= frontier.Position)
                {
                    taken.Add((from, entry.Key, entry.Value, record));
                }
            }
        }

        taken.Sort((a, b) => a.Record.Position != b.Record.Position ? a.Record.Position.CompareTo(b.Record.Position)
            : a.From != b.From ? a.From.CompareTo(b.From) : string.CompareOrdinal(a.Key, b.Key));

        var task = stage.Task;
        List<StateChange> changes;
        List<PendingOutput> outputs;
        DeadLetter[] deadLetters;
        List<LateRecord>? late;
        Dictionary<string, List<StateChange>>? logs = null;
        lock (task.Gate)
        {
            foreach (var (from, _, json, record) in taken)
            {
                Node? node = null;
                try
                {
                    task.Current = null;
                    task.Position = record.Position;
                    node = _topology.NodesByName[record.Node];
                    task.ProcessRouted(node, record.ToRecord(), record.StreamTime);
                }
                catch (Exception ex) when (ex is not OperationCanceledException and not StreamLookupException)
                {
                    var where = StreamKeyException.Operator(ex, task.Current?.Name ?? node?.Name ?? record.Node);
                    var reason = StreamKeyException.Reason(ex, where);
                    stage.DeadLetters.Add(CreateDeadLetter(RepartitionEvent(stage, from, json, record), ex, DeadLetterCause.NotRetryable, reason, where));
                }
            }

            task.Position = frontier.Position;
            task.Tick(frontier.StreamTime);
            changes = task.TakeChanges();
            outputs = task.TakeOutputs();
            late = task.TakeLate();
            deadLetters = [.. stage.DeadLetters, .. TimerDeadLetters(task, stage.StateName)];
            stage.DeadLetters.Clear();
            if (task.Crossings is { } crossings && (crossings.Count > 0 || frontier.Position > stage.Writer.MarkedAt))
            {
                logs = stage.Writer.Changes(Name, stage.Stage + 1, stage.Index, run.PartitionCount, task.TakeCrossings(), frontier.Position, task.StreamTime);
            }
        }

        if (changes.Count > 0 || outputs.Count > 0 || deadLetters.Length > 0 || taken.Count > 0 || logs is not null)
        {
            await CommitPartitionAsync(
                run,
                stage.Partition,
                stage,
                async (services, token) =>
                {
                    var unitOfWork = services.GetRequiredService<IUnitOfWork>();
                    await WriteAsync(services, stage.StateName, changes, outputs, deadLetters, token).ConfigureAwait(false);
                    foreach (var group in taken.GroupBy(t => t.From))
                    {
                        // Taken: a log has one reader, so what it took leaves the log with the commit that took it.
                        var log = RepartitionWriter.LogName(Name, stage.Stage, group.Key, stage.Index);
                        await _state.WriteAsync(log, [.. group.Select(t => new StateChange(RepartitionWriter.Store, t.Key, null))], unitOfWork, token).ConfigureAwait(false);
                    }

                    await WriteLogsAsync(services, logs, token).ConfigureAwait(false);
                    await _checkpoints!.SetCheckpointAsync(stage.CheckpointId, frontier.Position, unitOfWork, token).ConfigureAwait(false);
                }).ConfigureAwait(false);
        }

        ReportLate(late);
        stage.MarkCommitted(frontier.Position);
        if (logs is not null)
        {
            stage.Writer.MarkedAt = frontier.Position;
            WakeStage(run, stage.Stage + 1);
        }

        Release(null);
    }

    /// <summary>A record of a repartition log as the dead letters keep it: its JSON, under the log's name and source position.</summary>
    private RecordedEvent RepartitionEvent(StreamStage stage, int from, string json, RepartitionRecord record)
    {
        var envelope = new Envelope
        {
            MessageId = Guid.CreateVersion7(_time.GetUtcNow()),
            MessageType = "$stream-repartition",
            Time = new DateTimeOffset(record.Time, TimeSpan.Zero),
            Body = Encoding.UTF8.GetBytes(json),
        };
        return new RecordedEvent(RepartitionWriter.LogName(Name, stage.Stage, from, stage.Index), 0, record.Position, _time.GetUtcNow(), envelope);
    }
}
