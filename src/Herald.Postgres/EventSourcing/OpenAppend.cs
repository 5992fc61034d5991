using Herald.EventSourcing;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>An append made inside a transaction that is still open; disposing it without committing rolls it back.</summary>
internal sealed class OpenAppend : IAsyncDisposable
{
    private readonly NpgsqlConnection _connection;
    private readonly NpgsqlTransaction _transaction;
    private readonly Action<long> _committed;
    private bool _done;

    public OpenAppend(NpgsqlConnection connection, NpgsqlTransaction transaction, AppendResult result, Action<long> committed)
    {
        _connection = connection;
        _transaction = transaction;
        Result = result;
        _committed = committed;
    }

    /// <summary>What the append will have done once committed.</summary>
    public AppendResult Result { get; }

    /// <summary>The connection holding the transaction (for tests that run more statements in it).</summary>
    public NpgsqlConnection Connection => _connection;

    public async Task CommitAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_done, this);
        _done = true;
        try
        {
            await _transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            _committed(Result.LastPosition);
        }
        finally
        {
            await ReleaseAsync().ConfigureAwait(false);
        }
    }

    public async Task RollbackAsync(CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_done, this);
        _done = true;
        try
        {
            await _transaction.RollbackAsync(cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await ReleaseAsync().ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_done)
        {
            _done = true;
            await ReleaseAsync().ConfigureAwait(false);
        }
    }

    private async Task ReleaseAsync()
    {
        await _transaction.DisposeAsync().ConfigureAwait(false);
        await _connection.DisposeAsync().ConfigureAwait(false);
    }
}
