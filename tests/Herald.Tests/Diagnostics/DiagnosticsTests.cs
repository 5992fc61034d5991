using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Handling;
using Herald.Hosting;
using Herald.Internal;
using Herald.Messages;
using Herald.Persistence;
using Herald.Sagas;
using Herald.Transport;
using Herald.Conformance;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Diagnostics;

// Listeners are process-wide, so these tests filter what they observe by a unique endpoint name.
public sealed class DiagnosticsTests
{
    [Fact]
    public async Task PublishAndProcess_ShareOneTrace_ProcessIsAChildOfPublish()
    {
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var activities = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == HeraldDiagnostics.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activities.Enqueue,
        };
        ActivitySource.AddActivityListener(listener);
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(endpoint, handled);

        string traceId;
        using (var root = new Activity("test-root").SetIdFormat(ActivityIdFormat.W3C).Start())
        {
            traceId = root.TraceId.ToString();
            await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Traced(endpoint));
        }

        var envelope = await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.StartsWith("00-" + traceId, envelope.GetHeader(HeaderNames.TraceParent), StringComparison.Ordinal);
        await Eventually.UntilAsync(() => activities.Any(a => a.OperationName == "process diag-traced" && a.TraceId.ToString() == traceId), "the process span stops");
        var send = Assert.Single(activities, a => a.OperationName == "send " + endpoint && a.TraceId.ToString() == traceId);
        var process = Assert.Single(activities, a => a.OperationName == "process diag-traced" && a.TraceId.ToString() == traceId);
        Assert.Equal(send.SpanId, process.ParentSpanId);
        Assert.Equal(ActivityKind.Producer, send.Kind);
        Assert.Equal(ActivityKind.Consumer, process.Kind);
    }

    [Fact]
    public async Task ASendWhileNothingListensToHerald_CarriesTheAmbientTrace_AsTheOutboxDoes()
    {
        // Without a listener on Herald's source, a direct send started no span and put no trace context on the message,
        // while the same send through the outbox carried the ambient one (an ASP.NET Core request's): the consumer, in a
        // service that does listen, started a trace of its own. (Another test's listener can only make this pass.)
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(endpoint, handled);

        string traceId;
        using (var root = new Activity("request").SetIdFormat(ActivityIdFormat.W3C).Start())
        {
            traceId = root.TraceId.ToString();
            await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Traced(endpoint));
        }

        var envelope = await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.StartsWith("00-" + traceId + "-", envelope.GetHeader(HeaderNames.TraceParent), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ASendWithATraceparentTheCallerSet_KeepsIt_AndItsSpanJoinsThatTrace()
    {
        // The bus overwrote it with the current activity's, while an AggregateRepository keeps one given in its metadata:
        // a caller forwarding a context from another system lost it.
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var forwarded = ActivityTraceId.CreateRandom();
        var given = $"00-{forwarded}-{ActivitySpanId.CreateRandom()}-01";
        var sends = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == HeraldDiagnostics.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.OperationName == "send " + endpoint)
                {
                    sends.Enqueue(activity);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(endpoint, handled);

        using (new Activity("request").SetIdFormat(ActivityIdFormat.W3C).Start())
        {
            await host.Services.GetRequiredService<IMessageBus>().SendAsync(
                new Traced(endpoint), new DeliveryOptions { Headers = new Dictionary<string, string> { [HeaderNames.TraceParent] = given, [HeaderNames.TraceState] = "vendor=given" } });
        }

        var envelope = await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(given, envelope.GetHeader(HeaderNames.TraceParent));
        Assert.Equal("vendor=given", envelope.GetHeader(HeaderNames.TraceState));
        Assert.Equal(forwarded, Assert.Single(sends).TraceId);
    }

    [Theory]
    [InlineData("Traceparent", "Tracestate")] // a Go client's canonical header names (OpenTelemetry's HeaderCarrier)
    [InlineData("TRACEPARENT", "TRACESTATE")]
    public async Task ATraceContextFromTheWireInAnotherCase_IsTheProcessSpansParent(string parentName, string stateName)
    {
        // Looked up in lower case only, a traceparent another client wrote as "Traceparent" (or "ce-Traceparent" on NATS)
        // was not found, and the consumer started a trace of its own.
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var traceId = ActivityTraceId.CreateRandom();
        var spanId = ActivitySpanId.CreateRandom();
        var processes = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == HeraldDiagnostics.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.TraceId == traceId)
                {
                    processes.Enqueue(activity);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(endpoint, handled);

        await host.Services.GetRequiredService<ITransport>().SendAsync(endpoint, new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = "diag-traced",
            Time = DateTimeOffset.UtcNow,
            Body = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new Traced(endpoint), System.Text.Json.JsonSerializerOptions.Web),
            Headers = new Dictionary<string, string> { ["other"] = "x", [parentName] = $"00-{traceId}-{spanId}-01", [stateName] = "vendor=value" },
        });

        await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await Eventually.UntilAsync(() => !processes.IsEmpty, "the process span stops in the sender's trace");
        var process = Assert.Single(processes);
        Assert.Equal(spanId, process.ParentSpanId);
        Assert.Equal("vendor=value", process.TraceStateString);
    }

    [Fact]
    public async Task EventsSavedByAHandler_CarryTheTraceOfTheMessageItHandled()
    {
        // Stored events had the handled message's correlation and cause but no trace context, so the projections and
        // subscriptions that apply them started traces of their own, unlinked to the message's.
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == HeraldDiagnostics.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(endpoint, handled, h => h.AddHandler<BeaconHandler>().AddAggregate<Beacon>().AddMessageType<BeaconLit>());

        string traceId;
        using (var root = new Activity("test-root").SetIdFormat(ActivityIdFormat.W3C).Start())
        {
            traceId = root.TraceId.ToString();
            await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Lit(endpoint));
        }

        await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        var store = host.Services.GetRequiredService<IEventStore>();
        await using var scope = host.Services.CreateAsyncScope();
        var stream = scope.ServiceProvider.GetRequiredService<AggregateRepository<Beacon>>().StreamNameFor(endpoint);
        var stored = new List<Envelope>();
        await Eventually.UntilAsync(
            async () =>
            {
                stored.Clear();
                await foreach (var recorded in store.ReadStreamAsync(stream))
                {
                    stored.Add(recorded.Envelope);
                }

                return stored.Count > 0;
            },
            "the handler's unit of work commits the event");

        var traceParent = Assert.Single(stored).GetHeader(HeaderNames.TraceParent);
        Assert.StartsWith("00-" + traceId + "-", traceParent, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Processing_RecordsCountAndDurationTaggedByEndpointAndType()
    {
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var measurements = new ConcurrentQueue<(string Instrument, double Value, string? Endpoint, string? Type)>();
        using var meterListener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == HeraldDiagnostics.Name)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        meterListener.SetMeasurementEventCallback<long>((i, v, tags, _) => measurements.Enqueue((i.Name, v, Tag(tags, MetricNames.EndpointTag), Tag(tags, MetricNames.MessageTypeTag))));
        meterListener.SetMeasurementEventCallback<double>((i, v, tags, _) => measurements.Enqueue((i.Name, v, Tag(tags, MetricNames.EndpointTag), Tag(tags, MetricNames.MessageTypeTag))));
        meterListener.Start();
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(endpoint, handled);

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Traced(endpoint));
        await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));

        await Eventually.UntilAsync(
            () => measurements.Any(m => m.Instrument == MetricNames.ProcessingDuration && m.Endpoint == endpoint),
            "the processing duration is recorded");
        var processed = Assert.Single(measurements, m => m.Instrument == MetricNames.MessagesProcessed && m.Endpoint == endpoint);
        Assert.Equal(1, processed.Value);
        Assert.Equal("diag-traced", processed.Type);
        Assert.DoesNotContain(measurements, m => m.Instrument == MetricNames.MessagesFailed && m.Endpoint == endpoint);
    }

    // herald.messages.published counted only a message IMessageBus sent at once: one the outbox relay sent, or a stored
    // event the publisher published, reached the transport uncounted, so under the outbox the published rate read zero.
    [Fact]
    public async Task EachMessageThatReachesTheTransport_IsCountedPublishedOnce_SentAtOnce_ByTheOutboxRelay_OrAsAStoredEvent()
    {
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var relayed = "diag-relayed-" + Guid.NewGuid().ToString("N")[..8];
        var published = new ConcurrentQueue<(string? Destination, string? Type, long Value)>();
        using var meterListener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == HeraldDiagnostics.Name && instrument.Name == MetricNames.MessagesPublished)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        meterListener.SetMeasurementEventCallback<long>((_, v, tags, _) => published.Enqueue((Tag(tags, MetricNames.DestinationTag), Tag(tags, MetricNames.MessageTypeTag), v)));
        meterListener.Start();
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var host = await StartAsync(endpoint, handled, h => h
            .AddMessageType<Marker>()
            .Route<Marker>(relayed)
            .AddAggregate<Beacon>()
            .AddMessageType<BeaconLit>()
            .PublishStoredEvents()
            .UseOutbox());
        long Count(string destination) => published.Where(m => m.Destination == destination).Sum(m => m.Value);

        // Outside a unit of work: straight to the transport.
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Traced(endpoint));
        // Inside one: through the outbox, sent by the relay once the unit of work commits; and a stored event, published.
        await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, ct) =>
        {
            await services.GetRequiredService<IMessageBus>().SendAsync(new Marker(endpoint), cancellationToken: ct);
            var beacons = services.GetRequiredService<AggregateRepository<Beacon>>();
            var beacon = await beacons.LoadAsync(endpoint, ct);
            beacon.Light(endpoint);
            await beacons.SaveAsync(beacon, cancellationToken: ct);
        });

        await Eventually.UntilAsync(() => Count(relayed) >= 1, "the outbox relay's send is counted");
        await Eventually.UntilAsync(() => Count("diag-beacon-lit") >= 1, "the stored event's publish is counted");
        await Eventually.UntilAsync(() => Count(endpoint) >= 1, "the direct send is counted");
        await host.StopAsync();
        Assert.Equal(1, Count(endpoint));
        Assert.Equal(1, Count(relayed));
        Assert.Equal("diag-marker", Assert.Single(published, m => m.Destination == relayed).Type);
        Assert.Equal(1, Count("diag-beacon-lit"));
    }

    // A message whose handling committed but whose ack was lost comes again, and the inbox acks it without running its
    // handlers: herald.messages.processed counted it a second time, beside herald.messages.duplicates.
    [Fact]
    public async Task AMessageHandledThenRedeliveredAsADuplicate_IsCountedProcessedOnce_AndDuplicateOnce()
    {
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var measurements = new ConcurrentQueue<(string Instrument, string? Type)>();
        using var meterListener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == HeraldDiagnostics.Name
                    && instrument.Name is MetricNames.MessagesProcessed or MetricNames.MessagesDuplicate)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        meterListener.SetMeasurementEventCallback<long>((i, _, tags, _) =>
        {
            if (Tag(tags, MetricNames.EndpointTag) == endpoint)
            {
                measurements.Enqueue((i.Name, Tag(tags, MetricNames.MessageTypeTag)));
            }
        });
        meterListener.Start();
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);

        // One message at a time, so the marker sent after the duplicate is handled only once the duplicate was settled.
        using var host = await StartAsync(endpoint, handled, h => h.AddHandler<MarkerHandler>().UseInbox().Configure(o => o.MaxConcurrency = 1));
        var transport = host.Services.GetRequiredService<ITransport>();
        var message = host.Services.GetRequiredService<EnvelopeFactory>().Create(new Traced(endpoint));

        await transport.SendAsync(endpoint, message);
        await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));
        await transport.SendAsync(endpoint, message with { DeliveryAttempt = 2 });
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Marker(endpoint));
        await Eventually.UntilAsync(
            () => measurements.Any(m => m.Instrument == MetricNames.MessagesProcessed && m.Type == "diag-marker"),
            "the marker sent after the duplicate is processed");

        Assert.Single(measurements, m => m.Instrument == MetricNames.MessagesDuplicate && m.Type == "diag-traced");
        Assert.Single(measurements, m => m.Instrument == MetricNames.MessagesProcessed && m.Type == "diag-traced");
    }

    [Fact]
    public async Task UnknownMessageTypesFromTheWire_AreTaggedAsUnregistered_SoMetricsStayBounded()
    {
        // Issue 10: the type tag came from the wire before the registry check, so every made-up type was a new series.
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var types = new ConcurrentQueue<string?>();
        using var meterListener = ListenToDeadLettered(endpoint, (_, type) => types.Enqueue(type));
        using var host = await StartAsync(endpoint, new TaskCompletionSource<Envelope>());
        var transport = host.Services.GetRequiredService<ITransport>();

        for (var i = 0; i < 3; i++)
        {
            await transport.SendAsync(endpoint, new Envelope
            {
                MessageId = Guid.CreateVersion7(),
                MessageType = "made-up-" + Guid.NewGuid().ToString("N"),
                Time = DateTimeOffset.UtcNow,
                Body = "{}"u8.ToArray(),
            });
        }

        await Eventually.UntilAsync(() => types.Count == 3, "the three messages are dead-lettered");
        Assert.All(types, type => Assert.Equal("unknown", type));
    }

    // A message whose dead letter the store took but whose ack was lost comes again and is dead-lettered again under the
    // same id, which the store keeps once: the counter counted it twice, overstating it (and any alert on its rate).
    [Fact]
    public async Task AMessageDeadLetteredRedeliveredAndDeadLetteredAgain_IsCountedOnce()
    {
        var endpoint = "diag-" + Guid.NewGuid().ToString("N")[..8];
        var counted = new ConcurrentQueue<long>();
        using var meterListener = ListenToDeadLettered(endpoint, (value, _) => counted.Enqueue(value));
        var handled = new TaskCompletionSource<Envelope>(TaskCreationOptions.RunContinuationsAsynchronously);
        // One message at a time, so the marker sent after the redelivery is handled only once the redelivery was settled.
        using var host = await StartAsync(endpoint, handled, h => h.Configure(o => o.MaxConcurrency = 1));
        var transport = host.Services.GetRequiredService<ITransport>();
        var store = host.Services.GetRequiredService<Herald.Reliability.DeadLetters.IDeadLetterStore>();
        var unreadable = new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = "never-registered",
            Time = DateTimeOffset.UtcNow,
            Body = "{}"u8.ToArray(),
        };

        await transport.SendAsync(endpoint, unreadable);
        await Eventually.UntilAsync(() => !counted.IsEmpty, "the message is dead-lettered");
        await transport.SendAsync(endpoint, unreadable with { DeliveryAttempt = 2 });
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Traced(endpoint));
        await handled.Task.WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Equal(1, await store.CountAsync(new() { Endpoint = endpoint }));
        Assert.Equal([1L], counted);
    }

    [Fact]
    public async Task ASagaRunThatThrows_EndsItsSpanWithStatusError_AndTheException()
    {
        // The run's failure was only logged: its span ended Unset, so a trace showed a failed saga run as a success.
        var saga = "diag-saga-" + Guid.NewGuid().ToString("N")[..8];
        var stopped = new TaskCompletionSource<Activity>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == HeraldDiagnostics.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.DisplayName == "saga " + saga)
                {
                    stopped.TrySetResult(activity);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        await using var services = new ServiceCollection().BuildServiceProvider();
        var orchestrator = new SagaOrchestrator(new InMemorySagaStore(), new UnitOfWorkRunner(services.GetRequiredService<IServiceScopeFactory>()));
        var queue = new SagaRunQueue(orchestrator, Options.Create(new SagaOptions { RunConcurrency = 1 }), NullLogger<SagaRunQueue>.Instance);
        await queue.StartAsync(CancellationToken.None);
        try
        {
            await queue.EnqueueAsync(saga, "i-1", default, _ => Task.FromException(new InvalidOperationException("the saga store is down")), CancellationToken.None);
            var span = await stopped.Task.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal(ActivityStatusCode.Error, span.Status);
            Assert.Equal("the saga store is down", span.StatusDescription);
            Assert.Contains(span.Events, e => e.Name == "exception");
        }
        finally
        {
            await queue.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task AQueueGaugeWhoseReadsKeepFailing_StopsReportingTheLastCounts_UntilAReadSucceeds()
    {
        // Round-9 item: through an outage the gauge reported its last counts, a healthy-looking flat line.
        var name = "test.queue.gauge." + Guid.NewGuid().ToString("N")[..8];
        var clock = new FakeTimeProvider();
        var interval = TimeSpan.FromSeconds(5);
        var logger = new CountingLogger();
        var failing = 0;
        var reads = 0;
        var gauge = new QueueCountGauge<object, long[]>(name, "state", "test", static c => [("ready", c[0])]);
        gauge.Watch(this, "q", clock, interval, () =>
        {
            Interlocked.Increment(ref reads);
            return Volatile.Read(ref failing) == 1 ? Task.FromException<long[]?>(new InvalidOperationException("broker down")) : Task.FromResult<long[]?>([7]);
        }, logger);
        var observed = new ConcurrentQueue<long>();
        using var meterListener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Name == name)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        meterListener.SetMeasurementEventCallback<long>((_, v, _, _) => observed.Enqueue(v));
        meterListener.Start();
        long[] Collect()
        {
            observed.Clear();
            meterListener.RecordObservableInstruments();
            return [.. observed];
        }

        await Eventually.UntilAsync(() => Collect() is [7], "the first read is reported");

        Volatile.Write(ref failing, 1);
        clock.Advance(interval);
        Assert.Equal([7], Collect()); // starts a read that fails; one failed read is not yet stale
        await Eventually.UntilAsync(() => Volatile.Read(ref reads) >= 2, "the failing read ran");
        clock.Advance(interval * GaugeFreshness.StaleAfterIntervals);
        Assert.Empty(Collect());
        Assert.Empty(Collect());
        Assert.Equal(1, logger.Warnings);

        Volatile.Write(ref failing, 0);
        clock.Advance(interval);
        await Eventually.UntilAsync(() => Collect() is [7], "a read that succeeds is reported again");
        gauge.Forget(this);
    }

    /// <summary>Listens to <c>herald.messages.dead_lettered</c> of one endpoint: each measurement's value and message type tag.</summary>
    internal static MeterListener ListenToDeadLettered(string endpoint, Action<long, string?> measured)
    {
        var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == HeraldDiagnostics.Name && instrument.Name == MetricNames.MessagesDeadLettered)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            if (Tag(tags, MetricNames.EndpointTag) == endpoint)
            {
                measured(value, Tag(tags, MetricNames.MessageTypeTag));
            }
        });
        listener.Start();
        return listener;
    }

    private static string? Tag(ReadOnlySpan<KeyValuePair<string, object?>> tags, string name)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == name)
            {
                return tag.Value as string;
            }
        }

        return null;
    }

    private static async Task<IHost> StartAsync(string endpoint, TaskCompletionSource<Envelope> handled, Action<HeraldBuilder>? more = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h =>
        {
            h.AddHandler<TracedHandler>().Configure(o => o.EndpointName = endpoint);
            more?.Invoke(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [MessageType("diag-traced")]
    public sealed record Traced(string Endpoint);

    public sealed class TracedHandler(TaskCompletionSource<Envelope> handled) : IMessageHandler<Traced>
    {
        public ValueTask HandleAsync(Traced message, MessageContext context, CancellationToken cancellationToken)
        {
            handled.TrySetResult(context.Envelope);
            return ValueTask.CompletedTask;
        }
    }

    [MessageType("diag-marker")]
    public sealed record Marker(string Endpoint);

    public sealed class MarkerHandler : IMessageHandler<Marker>
    {
        public ValueTask HandleAsync(Marker message, MessageContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }

    [MessageType("diag-lit")]
    public sealed record Lit(string Id);

    [MessageType("diag-beacon-lit")]
    public sealed record BeaconLit(string Id);

    public sealed class Beacon : Aggregate
    {
        public void Light(string id)
        {
            Id = id;
            Raise(new BeaconLit(id));
        }

        protected override void When(object @event)
        {
        }
    }

    public sealed class BeaconHandler(AggregateRepository<Beacon> beacons, TaskCompletionSource<Envelope> handled) : IMessageHandler<Lit>
    {
        public async ValueTask HandleAsync(Lit message, MessageContext context, CancellationToken cancellationToken)
        {
            var beacon = await beacons.LoadAsync(message.Id, cancellationToken);
            beacon.Light(message.Id);
            await beacons.SaveAsync(beacon, cancellationToken: cancellationToken);
            handled.TrySetResult(context.Envelope);
        }
    }

    private sealed class CountingLogger : ILogger
    {
        private int _warnings;

        public int Warnings => Volatile.Read(ref _warnings);

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (logLevel == LogLevel.Warning)
            {
                Interlocked.Increment(ref _warnings);
            }
        }
    }
}
