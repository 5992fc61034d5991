namespace Herald.AspNetCore.Idempotency;

/// <summary>
/// The response body of an endpoint run under an idempotency key: kept in memory up to the most that is stored for replay;
/// once the response outgrows that (so it will not be stored), what was kept and everything after goes on to the client as
/// it is written, instead of a response of any size held whole in memory, its client waiting for the last byte. The
/// endpoint's <c>OnStarting</c> callbacks (<paramref name="starting"/>) run before the first byte is sent.
/// </summary>
internal sealed class ResponseCapture(Stream response, int maxKept, ResponseStarting starting) : Stream
{
    private readonly MemoryStream _kept = new();

    /// <summary>True once the response outgrew what is kept and was sent on as written: it is neither stored nor written again.</summary>
    public bool IsStreaming { get; private set; }

    /// <summary>Bytes the endpoint wrote, kept or sent.</summary>
    public long Written { get; private set; }

    /// <summary>The kept body (while not <see cref="IsStreaming"/>).</summary>
    public ReadOnlyMemory<byte> Kept => _kept.GetBuffer().AsMemory(0, (int)_kept.Length);

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position
    {
        get => throw new NotSupportedException();
        set => throw new NotSupportedException();
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        Written += buffer.Length;
        if (Keeps(buffer.Length))
        {
            _kept.Write(buffer);
            return;
        }

        if (!IsStreaming)
        {
            IsStreaming = true;
            // A synchronous write blocks on the server anyway (where AllowSynchronousIO lets it); so does this.
            starting.FireAsync().AsTask().GetAwaiter().GetResult();
            response.Write(Kept.Span);
            _kept.SetLength(0);
        }

        response.Write(buffer);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Written += buffer.Length;
        if (Keeps(buffer.Length))
        {
            _kept.Write(buffer.Span);
            return;
        }

        if (!IsStreaming)
        {
            IsStreaming = true;
            await starting.FireAsync().ConfigureAwait(false);
            await response.WriteAsync(Kept, cancellationToken).ConfigureAwait(false);
            _kept.SetLength(0);
        }

        await response.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
    }

    // A flush sends nothing while the body is kept: a response still to be stored is not started.
    public override void Flush()
    {
        if (IsStreaming)
        {
            response.Flush();
        }
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => IsStreaming ? response.FlushAsync(cancellationToken) : Task.CompletedTask;

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _kept.Dispose();
        }

        base.Dispose(disposing);
    }

    private bool Keeps(int count) => !IsStreaming && _kept.Length + count <= maxKept;
}
