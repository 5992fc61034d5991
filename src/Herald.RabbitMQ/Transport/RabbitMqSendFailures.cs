using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Herald.RabbitMQ.Transport;

/// <summary>Which RabbitMQ send failures recur on every retry, so the outbox dead-letters the message instead of retrying it.</summary>
internal static class RabbitMqSendFailures
{
    /// <summary>
    /// True when the broker closed the channel with 406 PRECONDITION_FAILED (a queue or exchange declared elsewhere with
    /// other arguments) or 404 NOT_FOUND (no such exchange or queue while Herald does not declare topology), anywhere in the
    /// exception's chain. A channel already closed by an earlier error says nothing about this send, so it stays transient.
    /// </summary>
    public static bool IsPermanent(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is OperationInterruptedException { ShutdownReason.ReplyCode: Constants.PreconditionFailed or Constants.NotFound } and not AlreadyClosedException)
            {
                return true;
            }
        }

        return false;
    }
}
