using Herald.Internal;
using Herald.Persistence;
using Microsoft.Extensions.Logging;

namespace Herald.Handling.Pipeline;

/// <summary>
/// One attempt in its own context, DI scope and unit of work: the steps of the attempt run, then the unit of work commits
/// (only if one was created: nothing asked for it, nothing to write), or rolls back when they fail. The attempt is the
/// ambient unit of work while its steps run, whatever its handlers' lifetimes.
/// </summary>
internal sealed class UnitOfWorkStep(
    string endpoint,
    IServiceProvider services,
    IMessageBus bus,
    bool useOutbox,
    ILogger logger,
    AttemptStep next,
    UserTrust userTrust = default)
{
    private readonly EndpointContext _endpoint = new(endpoint, services, bus, useOutbox);

    /// <summary>Runs attempt number <paramref name="attempt"/>; false when it found a duplicate (and rolled back).</summary>
    public async ValueTask<bool> RunAsync(Consumption consumption, int attempt)
    {
        var cancellationToken = consumption.CancellationToken;
        var context = new MessageContext(consumption.Envelope, consumption.Message!, _endpoint, cancellationToken, attempt) { Consumption = consumption };
        await using (context.ConfigureAwait(false))
        {
            context.UserId = await userTrust.ResolveAsync(consumption.Envelope, cancellationToken).ConfigureAwait(false);
            // The attempt is the ambient unit of work: a unit of work its scope creates (for an injected repository, the
            // outbox, the inbox) is the context's, and what the handlers send through the buses they inject joins it or
            // follows it. A singleton handler's ICommandBus cannot see the context otherwise, so this holds for every
            // attempt (issue 9); the scope itself is still made only when something asks for it.
            UnitOfWorkRunner.Enter(context);

            try
            {
                if (!await next.InvokeAsync(consumption, context).ConfigureAwait(false))
                {
                    return false;
                }

                UnitOfWorkRunner.ThrowIfDoomed(context);
                if (context.HasUnitOfWork)
                {
                    await UnitOfWorkRunner.CommitAsync(context.UnitOfWork, cancellationToken).ConfigureAwait(false);
                }

                return true;
            }
            catch
            {
                if (context.HasUnitOfWork)
                {
                    await UnitOfWorkRunner.RollbackQuietlyAsync(context.UnitOfWork, logger).ConfigureAwait(false);
                }

                throw;
            }
        }
    }
}

/// <summary>
/// Which user id an attempt acts for: what the authenticator says; without one, the envelope's own only where Herald wrote
/// it (a subscription's stored events), and none from a transport's wire.
/// </summary>
internal readonly record struct UserTrust(IMessageAuthenticator? Authenticator, bool TrustEnvelope)
{
    /// <summary>The user id <paramref name="envelope"/> acts for under this trust.</summary>
    public ValueTask<string?> ResolveAsync(Messages.Envelope envelope, CancellationToken cancellationToken) =>
        Authenticator is { } authenticator
            ? authenticator.AuthenticateAsync(envelope, cancellationToken)
            : new(TrustEnvelope ? envelope.UserId : null);
}
