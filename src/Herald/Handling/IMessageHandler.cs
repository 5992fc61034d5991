namespace Herald.Handling;

/// <summary>Handles messages of one type delivered from a transport (events published, commands sent to a queue).</summary>
/// <typeparam name="TMessage">The registered message type.</typeparam>
public interface IMessageHandler<in TMessage>
    where TMessage : notnull
{
    /// <summary>Handles one message; throwing fails the attempt (it is retried, then dead-lettered).</summary>
    ValueTask HandleAsync(TMessage message, MessageContext context, CancellationToken cancellationToken);
}
