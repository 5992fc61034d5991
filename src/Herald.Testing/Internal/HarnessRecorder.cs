using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Testing.Observing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Testing.Internal;

/// <summary>
/// Where the observing decorators report what they see: it decodes each envelope once, appends the observation to its
/// list (waking the expectations that wait for it) and keeps the delivery count for idleness.
/// </summary>
internal sealed class HarnessRecorder
{
    // The capture of a harness send in flight, so the harness learns the envelope the bus made for its message.
    private static readonly AsyncLocal<SentCapture?> s_capture = new();

    private readonly IServiceProvider _services;
    private readonly TimeProvider _clock;
    private readonly ILogger _logger;

    public HarnessRecorder(IServiceProvider services, TimeProvider clock, IHarnessClock harnessClock, ILoggerFactory? loggerFactory = null)
    {
        _services = services;
        _clock = clock;
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.Testing");
        Tracker = new DeliveryTracker(clock);
        Sent = new SentMessages("sent", harnessClock);
        Published = new SentMessages("published", harnessClock);
        Handled = new HandledMessages(harnessClock);
        DeadLettered = new DeadLetteredMessages(harnessClock);
    }

    public DeliveryTracker Tracker { get; }

    public SentMessages Sent { get; }

    public SentMessages Published { get; }

    public HandledMessages Handled { get; }

    public DeadLetteredMessages DeadLettered { get; }

    /// <summary>Starts capturing what the current flow sends; the capture holds the first envelope sent.</summary>
    public static SentCapture Capture() => s_capture.Value = new SentCapture();

    public void RecordSent(string destination, bool published, Envelope envelope)
    {
        var observation = new SentMessage(destination, published, envelope, Decode(envelope), _clock.GetUtcNow());
        Log.Dispatched(_logger, destination, envelope.MessageType, envelope.MessageId, published ? "published" : "sent");
        if (s_capture.Value is { } capture)
        {
            capture.Observed ??= observation;
        }

        (published ? Published : Sent).Add(observation);
    }

    public void RecordHandled(string endpoint, HandlingOutcome outcome, DeliveryObservation delivery, TimeSpan? redeliveryDelay, string? deadLetterReason = null)
    {
        var envelope = delivery.Envelope;
        Log.Settled(_logger, endpoint, envelope.MessageType, envelope.MessageId, outcome.ToString(), envelope.DeliveryAttempt);
        deadLetterReason = delivery.DeadLetter is { } deadLetter ? $"{deadLetter.Cause}: {deadLetter.ErrorMessage}" : deadLetterReason;
        Handled.Add(new HandledMessage(endpoint, outcome, delivery.Failures, redeliveryDelay, deadLetterReason, envelope, Decode(envelope), _clock.GetUtcNow()));
    }

    public void RecordDeadLetter(DeadLetter deadLetter) =>
        DeadLettered.Add(new DeadLetteredMessage(deadLetter, Decode(deadLetter.Envelope), _clock.GetUtcNow()));

    private object? Decode(Envelope envelope)
    {
        var registry = _services.GetRequiredService<MessageTypeRegistry>();
        if (!registry.TryGetByName(envelope.MessageType, out var type))
        {
            return null;
        }

        try
        {
            return _services.GetRequiredService<IMessageSerializer>().Deserialize(envelope.Body, type.ClrType);
        }
#pragma warning disable CA1031 // An undecodable body is observed as it is (no message); the pipeline dead-letters it with the reason.
        catch (Exception)
#pragma warning restore CA1031
        {
            return null;
        }
    }
}

/// <summary>The first message a harness send put on the transport.</summary>
internal sealed class SentCapture
{
    public SentMessage? Observed { get; set; }
}

/// <summary>
/// One delivery on its way through an endpoint: the failures the handlers threw and whether they ran. It flows with the
/// delivery's async context, so the middleware and the dead-letter store can add to it without any key.
/// </summary>
internal sealed class DeliveryObservation(Envelope envelope)
{
    private static readonly AsyncLocal<DeliveryObservation?> s_current = new();
    private readonly List<Exception> _failures = [];

    public static DeliveryObservation? Current
    {
        get => s_current.Value;
        set => s_current.Value = value;
    }

    public Envelope Envelope => envelope;

    public bool HandlersRan { get; set; }

    public DeadLetter? DeadLetter { get; set; }

    public IReadOnlyList<Exception> Failures
    {
        get
        {
            lock (_failures)
            {
                return [.. _failures];
            }
        }
    }

    public void Failed(Exception failure)
    {
        lock (_failures)
        {
            _failures.Add(failure);
        }
    }
}
