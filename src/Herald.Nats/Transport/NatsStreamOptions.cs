namespace Herald.Nats.Transport;

/// <summary>How a JetStream stream keeps its messages.</summary>
public enum NatsRetention
{
    /// <summary>Kept until a limit (count, bytes, age) removes the oldest; several consumers may read the same messages.</summary>
    Limits = 0,

    /// <summary>Kept while a consumer still has to ack them.</summary>
    Interest = 1,

    /// <summary>Removed once acked: each message is work for exactly one consumer.</summary>
    WorkQueue = 2,
}

/// <summary>Where a JetStream stream stores its messages.</summary>
public enum NatsStorage
{
    /// <summary>On disk: messages survive a restart of the server.</summary>
    File = 0,

    /// <summary>In memory: faster, lost when the server restarts.</summary>
    Memory = 1,
}

/// <summary>A JetStream stream Herald declares (creates or updates) when the transport starts, with its limits.</summary>
public sealed class NatsStreamOptions
{
    /// <summary>The stream's name, such as <c>EVENTS</c> (letters, digits, <c>-</c> and <c>_</c>).</summary>
    public string Name { get; set; } = string.Empty;

    /// <summary>The subjects the stream captures, wildcards allowed, such as <c>events.*</c>.</summary>
    public IList<string> Subjects { get; private set; } = [];

    /// <summary>How messages are kept; <see cref="NatsRetention.Limits"/> by default.</summary>
    public NatsRetention Retention { get; set; } = NatsRetention.Limits;

    /// <summary>Where messages are stored; on disk by default.</summary>
    public NatsStorage Storage { get; set; } = NatsStorage.File;

    /// <summary>Most messages kept (the oldest go first); null: no limit.</summary>
    public long? MaxMessages { get; set; }

    /// <summary>Most bytes kept (the oldest go first); null: no limit.</summary>
    public long? MaxBytes { get; set; }

    /// <summary>Longest a message is kept; null: no limit.</summary>
    public TimeSpan? MaxAge { get; set; }

    /// <summary>How many servers of a cluster hold the stream (1 to 5).</summary>
    public int Replicas { get; set; } = 1;

    /// <summary>How long the stream remembers a <c>Nats-Msg-Id</c> to drop a second publish of it; null: the server default (2 minutes).</summary>
    public TimeSpan? DuplicateWindow { get; set; }

    /// <summary>A copy with the given name and subjects, the limits unchanged: how the template for queue streams is applied.</summary>
    internal NatsStreamOptions For(string name, string subject)
    {
        var copy = (NatsStreamOptions)MemberwiseClone();
        copy.Name = name;
        copy.Subjects = [subject];
        return copy;
    }

    /// <summary>A copy of every setting, with a list of subjects of its own.</summary>
    internal NatsStreamOptions Copy()
    {
        var copy = (NatsStreamOptions)MemberwiseClone();
        copy.Subjects = [.. Subjects];
        return copy;
    }
}
