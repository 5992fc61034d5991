using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Persistence;
using Herald.Conformance.EventSourcing;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>An append a <see cref="PostgresUnitOfWork"/> has written and not yet committed: its transaction stays open until it ends.</summary>
internal sealed class HeldAppend : IOpenAppend
{
    private readonly PostgresUnitOfWork _unitOfWork;

    private HeldAppend(PostgresUnitOfWork unitOfWork, int processId)
    {
        _unitOfWork = unitOfWork;
        ProcessId = processId;
    }

    /// <summary>The backend holding the transaction (and the appended streams' row locks).</summary>
    public int ProcessId { get; }

    public static async Task<HeldAppend> BeginAsync(PostgresEventStore store, string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default)
    {
        var unitOfWork = store.BeginUnitOfWork();
        try
        {
            await store.AppendAsync(stream, expectedVersion, events, unitOfWork, cancellationToken);
            var transaction = await unitOfWork.GetNpgsqlTransactionAsync(cancellationToken);
            return new HeldAppend(unitOfWork, transaction.Connection!.ProcessID);
        }
        catch
        {
            await unitOfWork.DisposeAsync();
            throw;
        }
    }

    public Task CommitAsync(CancellationToken cancellationToken = default) => _unitOfWork.CommitAsync(cancellationToken).AsTask();

    public Task RollbackAsync(CancellationToken cancellationToken = default) => _unitOfWork.RollbackAsync(cancellationToken).AsTask();

    public ValueTask DisposeAsync() => _unitOfWork.DisposeAsync();
}
