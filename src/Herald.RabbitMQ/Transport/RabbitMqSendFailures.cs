using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Herald.RabbitMQ.Transport;

/// <summary>Which RabbitMQ send failures recur on every retry, so the outbox dead-letters the message instead of retrying it.</summary>
internal static class RabbitMqSendFailures
{
    /// <summary>
    /// True when the broker closed the channel with 406 PRECONDITION_FAILED (a queue or exchange declared elsewhere with
    /// other arguments) or, while Herald does not declare topology (<paramref name="declaresTopology"/> false), 404 NOT_FOUND
    /// (no such exchange or queue), anywhere in the exception's chain. While it declares, a 404 is an exchange deleted
    /// between its declare and the binding's or the publish: the next attempt declares it again, so it stays transient. A
    /// channel already closed by an earlier error says nothing about this send, so it stays transient too.
    /// </summary>
    public static bool IsPermanent(Exception exception, bool declaresTopology)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is OperationInterruptedException { ShutdownReason.ReplyCode: var code } and not AlreadyClosedException
                && (code == Constants.PreconditionFailed || (code == Constants.NotFound && !declaresTopology)))
            {
                return true;
            }
        }

        return false;
    }
}
