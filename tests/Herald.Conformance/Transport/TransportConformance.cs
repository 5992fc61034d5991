using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Time.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Herald.Conformance.Transport;

/// <summary>
/// The contract every <see cref="ITransport"/> passes. Each transport's test project derives from it and runs it against
/// the real engine, which may be shared by several test runs: every test uses its own queue and topic names.
/// Where engines legitimately differ, tests read <see cref="TransportCapabilities"/> and return early, saying why.
/// </summary>
public abstract partial class TransportConformance : IAsyncLifetime
{
    /// <summary>Header in which every envelope the suite sends carries its sequence number.</summary>
    public const string SequenceHeader = "herald-conformance-seq";

    private const string ProbeType = "conformance-probe";
    private const string MarkerType = "conformance-marker";

    // Real clocks and brokers round delays (timer ticks, whole seconds on some brokers); a fake clock is exact.
    private static readonly TimeSpan RealClockTolerance = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(1);

    private readonly List<ITransport> _created = [];
    private ITransport? _transport;

    /// <summary>Creates the suite; <paramref name="output"/> receives notes such as why a test returned early.</summary>
    protected TransportConformance(ITestOutputHelper output)
    {
        ArgumentNullException.ThrowIfNull(output);
        Output = output;
    }

    /// <summary>The test's output, for notes a reader of the results needs.</summary>
    protected ITestOutputHelper Output { get; }

    /// <summary>The transport under test, from the first <see cref="CreateTransportAsync"/> call of this test.</summary>
    protected ITransport Transport => _transport ?? throw new InvalidOperationException("InitializeAsync has not run yet.");

    /// <summary>How long a test waits for a delivery that should happen before it fails.</summary>
    protected virtual TimeSpan DeliveryTimeout => TimeSpan.FromSeconds(10);

    /// <summary>How long a test waits to see that something does not happen (a duplicate, an early delivery); keep it short.</summary>
    protected virtual TimeSpan QuietWindow => TimeSpan.FromMilliseconds(300);

    /// <summary>The delay used by the delayed-delivery tests (whole seconds suit every broker).</summary>
    protected virtual TimeSpan TestDelay => TimeSpan.FromSeconds(2);

    /// <summary>
    /// The fake clock the transport under test runs on, or null when it runs on real time. With a fake clock the delay
    /// tests move time with <see cref="AdvanceTimeAsync"/> and prove nothing arrives early; with real time they compare timestamps.
    /// </summary>
    protected virtual FakeTimeProvider? FakeClock => null;

    /// <summary>The clock delays are measured on: <see cref="FakeClock"/> when there is one, else the system clock.</summary>
    protected TimeProvider Clock => FakeClock ?? TimeProvider.System;

    /// <summary>True when the transport can be made to lose its connection by <see cref="KillConnectionAsync"/>.</summary>
    protected virtual bool CanKillConnection => false;

    /// <summary>
    /// False where a drain's removal of a native dead letter cannot fail after the store took it (an in-process transport),
    /// so a dead letter is never read again once stored and needs no identity of its own.
    /// </summary>
    protected virtual bool NativeDeadLettersCanBeReadAgainAfterStoring => true;

    /// <summary>
    /// Creates a transport connected to the engine under test. Called once per test for <see cref="Transport"/> and again
    /// when a test needs a second, independent client of the same engine (another process, as far as the broker can tell).
    /// A transport whose queues live inside the object (in-memory) returns the same instance every time.
    /// Every transport returned is disposed after the test.
    /// </summary>
    protected abstract Task<ITransport> CreateTransportAsync();

    /// <summary>
    /// Moves the transport's clock forward. With <see cref="FakeClock"/> it advances the fake clock; on real time it does
    /// nothing, because time passes by itself and the test then waits, with a deadline, for the delayed message.
    /// </summary>
    protected virtual ValueTask AdvanceTimeAsync(TimeSpan by)
    {
        FakeClock?.Advance(by);
        return ValueTask.CompletedTask;
    }

    /// <summary>Cuts the transport's connection to the engine (kill the socket, close the connection from the server) so that it must recover.</summary>
    protected virtual Task KillConnectionAsync(ITransport transport) => Task.CompletedTask;

    /// <summary>Connects the transport under test.</summary>
    public virtual async Task InitializeAsync() => _transport = await ConnectAsync();

    /// <summary>Disposes every transport the test created, newest first.</summary>
    public virtual async Task DisposeAsync()
    {
        for (var i = _created.Count - 1; i >= 0; i--)
        {
            await _created[i].DisposeAsync();
        }

        _created.Clear();
    }

    /// <summary>A queue or topic name no other test or test run uses: a prefix and a Guid, only [a-z0-9-].</summary>
    protected static string NewName(string purpose) =>
        string.Create(CultureInfo.InvariantCulture, $"herald-{purpose}-{Guid.NewGuid():N}");

    /// <summary>An envelope with a fresh id, the sequence number in a header and a small JSON body.</summary>
    protected static Envelope NewEnvelope(int sequence, string? partitionKey = null, string messageType = ProbeType)
    {
        var seq = sequence.ToString(CultureInfo.InvariantCulture);
        return new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = messageType,
            Time = DateTimeOffset.UtcNow,
            PartitionKey = partitionKey,
            Headers = new Dictionary<string, string>(StringComparer.Ordinal) { [SequenceHeader] = seq },
            Body = Encoding.UTF8.GetBytes("{\"seq\":" + seq + "}"),
        };
    }

    /// <summary>The sequence number the suite put into the envelope.</summary>
    protected static int SequenceOf(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        return int.Parse(envelope.GetHeader(SequenceHeader) ?? "-1", CultureInfo.InvariantCulture);
    }

    /// <summary>A collector stamping deliveries with <see cref="Clock"/>.</summary>
    protected DeliveryCollector NewCollector() => new(Clock);

    /// <summary>Says in the test output why a test returns without checking anything.</summary>
    protected void NotApplicable(string why) =>
        Output.WriteLine($"Not applicable to the '{Transport.Name}' transport, nothing checked: {why}");

    /// <summary>Starts a consumer that records every delivery into the collector, then runs <paramref name="behaviour"/> (if any) on it.</summary>
    protected static async Task<ITransportConsumer> StartConsumerAsync(
        ITransport transport,
        string queue,
        DeliveryCollector collector,
        Func<Delivery, CancellationToken, ValueTask>? behaviour = null,
        ConsumerOptions? options = null,
        string consumer = "consumer")
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(collector);
        return await transport.ConsumeAsync(queue, options ?? ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            collector.Add(delivery, consumer);
            if (behaviour is not null)
            {
                await behaviour(delivery, cancellationToken);
            }
        });
    }

    /// <summary>
    /// Sends two markers one after the other and waits for each. A consumer handling in order has then settled everything
    /// sent before, and anything it put back for redelivery would have come before the second marker.
    /// </summary>
    protected async Task SendMarkersAndWaitAsync(ITransport transport, string queue, DeliveryCollector collector)
    {
        ArgumentNullException.ThrowIfNull(transport);
        ArgumentNullException.ThrowIfNull(collector);
        for (var i = 1; i <= 2; i++)
        {
            var marker = NewEnvelope(-i, messageType: MarkerType);
            await transport.SendAsync(queue, marker);
            await collector.WaitForMessagesAsync([marker.MessageId], DeliveryTimeout, $"marker {i} on queue '{queue}'");
        }
    }

    /// <summary>Asserts the message was delivered exactly <paramref name="times"/> times.</summary>
    protected static void AssertDeliveredTimes(DeliveryCollector collector, Guid messageId, int times, string what)
    {
        ArgumentNullException.ThrowIfNull(collector);
        var count = collector.CountOf(messageId);
        Assert.True(count == times, $"{what}: expected {times} deliveries of {messageId:N}, saw {count}. {collector.Describe()}");
    }

    /// <summary>Asserts the task is still running after the window: a bounded wait for something that must not happen.</summary>
    protected async Task AssertStillRunningAsync(Task task, string what)
    {
        ArgumentNullException.ThrowIfNull(task);
        try
        {
            await task.WaitAsync(QuietWindow);
        }
        catch (TimeoutException)
        {
            return;
        }
#pragma warning disable CA1031 // Whatever ended the task, it ended too early; the assertion below says so.
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        Assert.Fail($"{what} (it completed with status {task.Status} within {QuietWindow.TotalMilliseconds:0} ms).");
    }

    /// <summary>
    /// Moves time to just before a message is due and proves it has not arrived, then moves time to when it is due.
    /// On real time nothing is waited here: the caller waits for the message and compares timestamps.
    /// </summary>
    private async Task PassTimeUntilDueAsync(TimeSpan delay, DeliveryCollector collector, int countBeforeDue, string what)
    {
        if (FakeClock is null)
        {
            await AdvanceTimeAsync(delay);
            return;
        }

        await AdvanceTimeAsync(delay - Tick);
        await collector.AssertNoMoreThanAsync(countBeforeDue, QuietWindow, what);
        await AdvanceTimeAsync(Tick);
    }

    /// <summary>Asserts a delayed delivery arrived no earlier than its delay, allowing the real clock's rounding.</summary>
    private void AssertNotEarly(DateTimeOffset start, CollectedDelivery delivery, TimeSpan delay, string what)
    {
        var waited = delivery.ReceivedAt - start;
        var allowed = FakeClock is null ? delay - RealClockTolerance : delay;
        Assert.True(
            waited >= allowed,
            $"{what}: delivered {waited.TotalMilliseconds:0} ms after it was scheduled, before its delay of {delay.TotalMilliseconds:0} ms ({delivery}).");
    }

    private async Task<ITransport> ConnectAsync()
    {
        var transport = await CreateTransportAsync();
        if (!_created.Contains(transport))
        {
            _created.Add(transport);
        }

        return transport;
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private static TaskCompletionSource<T> NewSignal<T>() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
