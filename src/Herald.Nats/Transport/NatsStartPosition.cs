using System.Globalization;

namespace Herald.Nats.Transport;

/// <summary>Where a durable consumer starts reading its stream when it is created: the JetStream deliver policy.</summary>
public sealed record NatsStartPosition
{
    private NatsStartPosition(NatsStartKind kind, ulong sequence, DateTimeOffset time)
    {
        Kind = kind;
        Sequence = sequence;
        Time = time;
    }

    /// <summary>Every message the stream holds, oldest first: what a queue expects (nothing sent before a consumer is lost).</summary>
    public static NatsStartPosition All { get; } = new(NatsStartKind.All, 0, default);

    /// <summary>Only messages stored after the consumer was created.</summary>
    public static NatsStartPosition New { get; } = new(NatsStartKind.New, 0, default);

    /// <summary>Which kind of position this is.</summary>
    public NatsStartKind Kind { get; }

    /// <summary>The first stream sequence read, for <see cref="NatsStartKind.FromSequence"/>.</summary>
    public ulong Sequence { get; }

    /// <summary>The earliest store time read, for <see cref="NatsStartKind.FromTime"/>.</summary>
    public DateTimeOffset Time { get; }

    /// <summary>From the message with this stream sequence on (1 is the first message ever stored).</summary>
    public static NatsStartPosition FromSequence(ulong sequence)
    {
        ArgumentOutOfRangeException.ThrowIfZero(sequence);
        return new(NatsStartKind.FromSequence, sequence, default);
    }

    /// <summary>From the first message stored at or after this time on.</summary>
    public static NatsStartPosition FromTime(DateTimeOffset time) => new(NatsStartKind.FromTime, 0, time);

    /// <inheritdoc />
    public override string ToString() => Kind switch
    {
        NatsStartKind.FromSequence => "from sequence " + Sequence.ToString(CultureInfo.InvariantCulture),
        NatsStartKind.FromTime => "from " + Time.ToString("O", CultureInfo.InvariantCulture),
        _ => Kind.ToString().ToLowerInvariant(),
    };
}

/// <summary>The kinds of <see cref="NatsStartPosition"/>.</summary>
public enum NatsStartKind
{
    /// <summary>Every message the stream holds.</summary>
    All = 0,

    /// <summary>Only messages stored after the consumer was created.</summary>
    New = 1,

    /// <summary>From a stream sequence on.</summary>
    FromSequence = 2,

    /// <summary>From a store time on.</summary>
    FromTime = 3,
}
