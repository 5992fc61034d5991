using Herald.Messages;

namespace Herald.Handling;

/// <summary>
/// Decides on whose behalf a delivered message acts. The user id on the wire (<see cref="Envelope.UserId"/>) is only a
/// claim any sender can make: without an authenticator Herald trusts none, so <see cref="MessageContext.UserId"/> is null
/// and nothing the handlers send or store carries the claim. Register one with <c>h.UseMessageAuthenticator&lt;T&gt;()</c>.
/// </summary>
public interface IMessageAuthenticator
{
    /// <summary>
    /// The user id to trust for <paramref name="envelope"/> (usually its claim, once verified, for example against a signed
    /// header), or null to trust none. Called once per attempt before the handlers; an exception fails the attempt.
    /// </summary>
    ValueTask<string?> AuthenticateAsync(Envelope envelope, CancellationToken cancellationToken);
}
