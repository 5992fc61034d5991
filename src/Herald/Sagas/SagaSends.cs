using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Sagas;

/// <summary>How a state machine's transition sends: never before the save that records it has committed.</summary>
internal static class SagaSends
{
    /// <summary>
    /// Runs <paramref name="send"/> through the outbox of <paramref name="scope"/> when it has one, else from
    /// <paramref name="unitOfWork"/>'s commit. Sent at once, a message would leave even when the transition then fails
    /// (a version conflict runs it again, and it sends again), and its reply could arrive while the instance still stood
    /// in the state before, to be ignored there. A send that fails after the commit is reported to <paramref name="failed"/>:
    /// failing then would retry a message whose transition is done.
    /// </summary>
    internal static ValueTask OnCommitAsync(
        IUnitOfWorkScope? scope,
        IUnitOfWork unitOfWork,
        IServiceProvider services,
        Func<CancellationToken, ValueTask> send,
        Action<ILogger, Exception> failed,
        CancellationToken cancellationToken)
    {
        if (scope?.GetOutbox() is not null)
        {
            return send(cancellationToken);
        }

        var logger = services.GetService<ILoggerFactory>()?.CreateLogger("Herald.Sagas") ?? NullLogger.Instance;
        unitOfWork.OnCommitted(async token =>
        {
            try
            {
                await send(token).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // The save has committed: failing now would retry a message whose transition is done.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failed(logger, ex);
            }
        });
        return ValueTask.CompletedTask;
    }
}
