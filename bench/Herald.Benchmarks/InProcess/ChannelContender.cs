using System.Threading.Channels;

namespace Herald.Benchmarks.InProcess;

internal sealed record ChannelPing(int Sequence);

/// <summary>The floor: one bounded Channel and one reader task, no framework at all.</summary>
internal sealed class ChannelContender : IContender
{
    private readonly HandledCounter _counter = new();
    private readonly Channel<ChannelPing> _channel = Channel.CreateBounded<ChannelPing>(
        new BoundedChannelOptions(10_000) { FullMode = BoundedChannelFullMode.Wait, SingleReader = true });

    private Task? _reader;

    public string Name => "Channel<T> baseline";

    public string Setup => "`Channel.CreateBounded<T>(10,000)` (FullMode Wait, single reader), one reader task that counts; `WriteAsync`.";

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var reader = _channel.Reader;
        _reader = Task.Run(
            async () =>
            {
                while (await reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
                {
                    while (reader.TryRead(out _))
                    {
                        _counter.Increment();
                    }
                }
            },
            CancellationToken.None);
        return Task.CompletedTask;
    }

    public async Task RunAsync(int messages, int producers, CancellationToken cancellationToken)
    {
        var writer = _channel.Writer;
        _counter.Reset(messages);
        await Producers.RunAsync(messages, producers, i => writer.WriteAsync(new ChannelPing(i), cancellationToken), cancellationToken).ConfigureAwait(false);
        await _counter.WaitAsync(Producers.Timeout(messages), cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        _channel.Writer.TryComplete();
        if (_reader is not null)
        {
            await _reader.ConfigureAwait(false);
        }
    }
}
