using Herald.Conformance.Transport;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;

namespace Herald.Tests.Transport;

/// <summary>Runs the transport conformance suite on the in-memory transport, with time on a fake clock.</summary>
public sealed class InMemoryTransportConformanceTests(ITestOutputHelper output) : TransportConformance(output)
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
    private InMemoryTransport? _transport;

    protected override FakeTimeProvider? FakeClock => _clock;

    // A drain removes the dead letter in the same process right after the store took it.
    protected override bool NativeDeadLettersCanBeReadAgainAfterStoring => false;

    // Queues live inside the transport object, so every "connection" of a test is the same instance.
    protected override Task<ITransport> CreateTransportAsync() =>
        Task.FromResult<ITransport>(_transport ??= new InMemoryTransport(new InMemoryTransportOptions { MaxMessageBytes = 64 * 1024 }, _clock));
}
