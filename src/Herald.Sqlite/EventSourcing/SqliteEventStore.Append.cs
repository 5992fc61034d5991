using Herald.EventSourcing;
using Herald.Messages;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.EventSourcing;

internal sealed partial class SqliteEventStore
{
    /// <inheritdoc />
    public async ValueTask<AppendResult> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default)
    {
        AppendValidation.Validate(stream, expectedVersion, events, _options.MaxEventBytes);
        cancellationToken.ThrowIfCancellationRequested();
        return await WriteAsync(session => session.Append(stream, expectedVersion, events), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask DeleteStreamAsync(string stream, ExpectedVersion expectedVersion, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        AppendValidation.ValidateExpectedVersion(expectedVersion);
        cancellationToken.ThrowIfCancellationRequested();
        await WriteAsync(session =>
        {
            session.Delete(stream, expectedVersion);
            return true;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Begins a write transaction on a connection of its own, appends inside it and returns with the transaction still open
    /// (the hook the conformance suite's torture test uses; a unit of work writes nothing before its commit). Until it ends,
    /// it holds the write lock: every other writer of the file waits, as SQLite allows one writer at a time. Readers are not
    /// held back.
    /// </summary>
    internal async Task<SqliteOpenAppend> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default)
    {
        AppendValidation.Validate(stream, expectedVersion, events, _options.MaxEventBytes);
        await OpenedAsync(cancellationToken).ConfigureAwait(false);
        await _openAppendGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        var locked = false;
        WriteSession? session = null;
        try
        {
            await _writeLock.WaitAsync(cancellationToken).ConfigureAwait(false);
            locked = true;
            session = new WriteSession(_connections.OpenWriter(), _timeProvider, _options.BusyTimeout);
            if (!session.Begin(static token => !token.IsCancellationRequested, cancellationToken))
            {
                // Cancelled while another connection held the file's write lock.
                cancellationToken.ThrowIfCancellationRequested();
            }

            var result = session.Append(stream, expectedVersion, events);
            return new SqliteOpenAppend(session, result, _writeLock, _openAppendGate, _signal);
        }
        catch
        {
            if (session is not null)
            {
                session.Rollback();
                session.Dispose();
            }

            if (locked)
            {
                _writeLock.Release();
            }

            _openAppendGate.Release();
            throw;
        }
    }
}
