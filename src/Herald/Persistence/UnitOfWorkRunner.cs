using Herald.EventSourcing.Aggregates;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Persistence;

/// <summary>
/// Opens a DI scope and its unit of work, runs work in it, and commits (or, when the work throws, rolls back). The message
/// pipeline, the command and query buses and the HTTP endpoints all run their work through it, so every engine's writes
/// (event appends, snapshots, outbox rows, the inbox mark, the handler's own tables) commit together or not at all.
/// Work started while another unit of work is running (a command sent from a handler) joins that one.
/// </summary>
public sealed class UnitOfWorkRunner
{
    private static readonly AsyncLocal<IUnitOfWorkScope?> Ambient = new();

    private readonly IServiceScopeFactory _scopes;
    private readonly ILogger _logger;

    /// <summary>Creates the runner over the application's scopes.</summary>
    public UnitOfWorkRunner(IServiceScopeFactory scopes, ILogger<UnitOfWorkRunner>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(scopes);
        _scopes = scopes;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The unit of work running on this flow, or null.</summary>
    internal static IUnitOfWorkScope? Current => Ambient.Value;

    /// <summary>
    /// Runs <paramref name="work"/> with the services of a new scope and commits its unit of work when it returns; rolls back
    /// and rethrows when it throws (or when the commit fails, for example with a <see cref="EventSourcing.ConcurrencyException"/>).
    /// Inside another unit of work it runs in that one, which its owner commits (once that one's work is over, as for work a
    /// handler left running, in a new one); when it throws there, that unit of work is rolled back too, even if the caller
    /// catches the exception. <paramref name="metadata"/> is stamped on the events stored in a new unit of work; a joined one
    /// keeps its own. Without it, work started from work whose unit of work has ended takes that one's metadata, as a
    /// message sent through the bus from there does.
    /// </summary>
    public ValueTask RunAsync(Func<IServiceProvider, CancellationToken, ValueTask> work, EventMetadata? metadata = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        return Joinable() is { } current ? RunJoinedAsync(current, work, cancellationToken) : RunScopedAsync(work, metadata, cancellationToken);
    }

    private async ValueTask RunScopedAsync(Func<IServiceProvider, CancellationToken, ValueTask> work, EventMetadata? metadata, CancellationToken cancellationToken) =>
        await RunScopedAsync<bool>(
            async (services, token) =>
            {
                await work(services, token).ConfigureAwait(false);
                return true;
            },
            metadata,
            cancellationToken).ConfigureAwait(false);

    /// <summary>Runs <paramref name="work"/> as <see cref="RunAsync(Func{IServiceProvider, CancellationToken, ValueTask}, EventMetadata?, CancellationToken)"/> does, and returns its result once committed.</summary>
    public ValueTask<TResult> RunAsync<TResult>(Func<IServiceProvider, CancellationToken, ValueTask<TResult>> work, EventMetadata? metadata = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(work);
        return Joinable() is { } current ? RunJoinedAsync(current, work, cancellationToken) : RunScopedAsync(work, metadata, cancellationToken);
    }

    /// <summary>
    /// Runs <paramref name="work"/> that only reads (a query) as <see cref="RunAsync{TResult}"/> does, except that its failure
    /// in a joined unit of work leaves that unit of work as it was: a query writes nothing to take back.
    /// </summary>
    internal ValueTask<TResult> RunReadingAsync<TResult>(Func<IServiceProvider, CancellationToken, ValueTask<TResult>> work, CancellationToken cancellationToken) =>
        Joinable() is { } current ? work(current.Services, cancellationToken) : RunScopedAsync(work, null, cancellationToken);

    /// <summary>
    /// Fails the owner of <paramref name="scope"/> instead of letting it commit when work that joined it failed: that work's
    /// writes are enlisted in the same unit of work, so committing it would store half of a failed command. Called where the
    /// owner's own work has returned and before its commit, so the owner rolls back as for any failure.
    /// </summary>
    internal static void ThrowIfDoomed(IUnitOfWorkScope scope)
    {
        if (scope.DoomedBy is { } failure)
        {
            throw new UnitOfWorkDoomedException(failure);
        }
    }

    // The joined work's writes are enlisted in the owner's unit of work with nothing to take only them back, so its failure
    // makes the whole unit of work rollback-only (as a failed nested TransactionScope dooms its transaction).
    private static async ValueTask RunJoinedAsync(IUnitOfWorkScope current, Func<IServiceProvider, CancellationToken, ValueTask> work, CancellationToken cancellationToken) =>
        await RunJoinedAsync<bool>(
            current,
            async (services, token) =>
            {
                await work(services, token).ConfigureAwait(false);
                return true;
            },
            cancellationToken).ConfigureAwait(false);

    private static async ValueTask<TResult> RunJoinedAsync<TResult>(IUnitOfWorkScope current, Func<IServiceProvider, CancellationToken, ValueTask<TResult>> work, CancellationToken cancellationToken)
    {
        try
        {
            return await work(current.Services, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // Unless validation refused this command before anything of it ran: it enlisted nothing to take back.
            if (ex is not Cqrs.Validation.ValidationException refusal || !refusal.TakeRefusal(current))
            {
                current.Doom(ex);
            }

            throw;
        }
    }

    // The ambient scope stays on the flows its work started, after that work is over; nothing would commit what joined it then.
    private static IUnitOfWorkScope? Joinable() => Ambient.Value is { HasEnded: false } current ? current : null;

    /// <summary>Wraps a persistence package's factory of the scoped unit of work, so the running scope commits what it creates.</summary>
    internal static Func<IServiceProvider, IUnitOfWork> Adopting(Func<IServiceProvider, IUnitOfWork> factory) => services =>
    {
        var unitOfWork = factory(services);
        Ambient.Value?.Adopt(services, unitOfWork);
        return unitOfWork;
    };

    /// <summary>Makes <paramref name="scope"/> the ambient unit of work of the calling async flow (the message pipeline's attempt).</summary>
    internal static void Enter(IUnitOfWorkScope scope) => Ambient.Value = scope;

    /// <summary>
    /// Commits <paramref name="unitOfWork"/> the one way every runner of work does (this one, the message pipeline's attempt,
    /// a batch of a subscription): first confirms the leases its writes rely on (<see cref="Internal.UnitOfWorkLeases"/>),
    /// refusing the commit when one is lost, then commits. A commit that fails has rolled back (the contract of
    /// <see cref="IUnitOfWork.CommitAsync"/>).
    /// </summary>
    internal static async ValueTask CommitAsync(IUnitOfWork unitOfWork, CancellationToken cancellationToken)
    {
        await Internal.UnitOfWorkLeases.ConfirmAsync(unitOfWork, cancellationToken).ConfigureAwait(false);
        await unitOfWork.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Rolls back, logging (not throwing) a failure: the work's own exception is the one that counts.</summary>
    internal static async ValueTask RollbackQuietlyAsync(IUnitOfWork unitOfWork, ILogger logger)
    {
        try
        {
            await unitOfWork.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // A failed rollback is logged; the transaction dies with its scope.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Hosting.Log.UnitOfWorkRollbackFailed(logger, ex);
        }
    }

    private async ValueTask<TResult> RunScopedAsync<TResult>(Func<IServiceProvider, CancellationToken, ValueTask<TResult>> work, EventMetadata? metadata, CancellationToken cancellationToken)
    {
        // Null: the metadata of the work this was started from, if its unit of work has ended (a joinable one was joined).
        var scope = new RunnerScope(_scopes.CreateAsyncScope(), metadata ?? Ambient.Value?.Metadata ?? EventMetadata.None);
        await using (scope.ConfigureAwait(false))
        {
            Ambient.Value = scope;
            TResult result;
            try
            {
                result = await work(scope.Services, cancellationToken).ConfigureAwait(false);
                ThrowIfDoomed(scope);
            }
            catch
            {
                await scope.RollbackAsync(_logger).ConfigureAwait(false);
                throw;
            }

            await scope.CommitAsync(cancellationToken).ConfigureAwait(false);
            return result;
        }
    }

    // A scope the runner opened; its unit of work exists only once something in the scope asked for it.
    private sealed class RunnerScope(AsyncServiceScope scope, EventMetadata metadata) : IUnitOfWorkScope, IAsyncDisposable
    {
        private IUnitOfWork? _unitOfWork;
        private IOutbox? _outbox;
        private bool _outboxLooked;
        private bool _ended;
        private Exception? _doomedBy;

        public IServiceProvider Services => scope.ServiceProvider;

        public EventMetadata Metadata => metadata;

        public bool HasEnded => _ended;

        public Exception? DoomedBy => Volatile.Read(ref _doomedBy);

        public void Doom(Exception failure) => Interlocked.CompareExchange(ref _doomedBy, failure, null);

        // What a command handler sends through its injected bus goes through the outbox when the host routes handlers'
        // messages there (issue 9); once the scope has ended, a late send leaves at once.
        public IOutbox? GetOutbox()
        {
            if (_ended)
            {
                return null;
            }

            if (!_outboxLooked)
            {
                var routed = scope.ServiceProvider.GetService<IOptions<OutboxOptions>>()?.Value.RouteHandlerMessages ?? true;
                _outbox = routed ? scope.ServiceProvider.GetService<IOutbox>() : null;
                _outboxLooked = true;
            }

            return _outbox;
        }

        public bool Owns(IUnitOfWork unitOfWork) => ReferenceEquals(_unitOfWork, unitOfWork);

        public void Adopt(IServiceProvider services, IUnitOfWork unitOfWork)
        {
            if (ReferenceEquals(services, scope.ServiceProvider))
            {
                _unitOfWork ??= unitOfWork;
            }
        }

        public ValueTask CommitAsync(CancellationToken cancellationToken) =>
            _unitOfWork is { } unitOfWork ? UnitOfWorkRunner.CommitAsync(unitOfWork, cancellationToken) : ValueTask.CompletedTask;

        public ValueTask RollbackAsync(ILogger logger) =>
            _unitOfWork is { } unitOfWork ? RollbackQuietlyAsync(unitOfWork, logger) : ValueTask.CompletedTask;

        public ValueTask DisposeAsync()
        {
            _ended = true;
            return scope.DisposeAsync();
        }
    }
}
