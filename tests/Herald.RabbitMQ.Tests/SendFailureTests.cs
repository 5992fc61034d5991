using Herald.RabbitMQ.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Herald.RabbitMQ.Tests;

/// <summary>Which send failures the outbox dead-letters (permanent) and which it retries.</summary>
public sealed class SendFailureTests
{
    private static Exception Closed(ushort code, string text) =>
        new InvalidOperationException("Declaring failed", new OperationInterruptedException(new ShutdownEventArgs(ShutdownInitiator.Peer, code, text)));

    // A CI run beside a CPU hog: the outbox model deleted the topic's exchange between a send's declare of it and of its
    // binding, the binding's declare met 404, and the committed message was dead-lettered as SendRejected, never delivered.
    [Fact]
    public void A404_WhileHeraldDeclaresTopology_IsTransient_TheNextAttemptDeclaresAgain()
    {
        Assert.False(RabbitMqSendFailures.IsPermanent(Closed(Constants.NotFound, "NOT_FOUND - no exchange 'x' in vhost '/'"), declaresTopology: true));
    }

    [Fact]
    public void A404_WhileHeraldDoesNotDeclareTopology_IsPermanent()
    {
        Assert.True(RabbitMqSendFailures.IsPermanent(Closed(Constants.NotFound, "NOT_FOUND - no exchange 'x' in vhost '/'"), declaresTopology: false));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void A406_IsPermanent_AndATransientCodeIsNot(bool declaresTopology)
    {
        Assert.True(RabbitMqSendFailures.IsPermanent(Closed(Constants.PreconditionFailed, "PRECONDITION_FAILED - inequivalent arg"), declaresTopology));
        Assert.False(RabbitMqSendFailures.IsPermanent(Closed(Constants.ConnectionForced, "CONNECTION_FORCED"), declaresTopology));
    }
}
