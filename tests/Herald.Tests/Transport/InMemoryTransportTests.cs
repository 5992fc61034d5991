using Herald.Transport;
using Herald.Transport.InMemory;

namespace Herald.Tests.Transport;

public sealed class InMemoryTransportTests
{
    // Regression (found with issue 4's dead-letter manager tests): the transport disposes every consumer it created,
    // so a consumer its owner already disposed was disposed twice and threw ObjectDisposedException.
    [Fact]
    public async Task Dispose_AfterAConsumerWasDisposedByItsOwner_DoesNotThrow()
    {
        var transport = new InMemoryTransport();
        var consumer = await transport.ConsumeAsync("q", ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask);

        await consumer.DisposeAsync();
        await consumer.DisposeAsync();
        await transport.DisposeAsync();
    }
}
